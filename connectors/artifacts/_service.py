"""The artifacts servicer: template and data to HTML (``_templates``), HTML to PDF (``_pdf``),
attachments appended (``_attachments``), then stored in S3 (``_storage``) or returned as a data URL.

Rendering and layout are CPU-bound and blocking: they run in the connector's own thread pool
(``server.run_blocking``), as does the S3 upload. The template checks the call's deadline as it
renders; WeasyPrint cannot be interrupted, so the deadline is checked again before layout, before
the attachments and before the upload. A long document can run as a long-running command
(``proxy__async: true``), where the job's timeout applies instead.

Configuration (environment, or the constructor's keyword arguments):
    CONNECTOR_PROXY_ARTIFACTS_STORAGE             the default storage (empty: data URLs).
    CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN     presigned links' default lifetime (3600 s).
    CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES    the largest PDF returned as a data URL (10 MiB).
    CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS      the longest rendered template (2,000,000).
"""

from __future__ import annotations

import base64
import math
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from spiff.connector.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc

from connectors._timing import ms_since
from connectors.aws._errors import raise_bad
from server import errors, json_values, log, run_blocking
from server.egress import EgressPolicy

from . import _attachments, _pdf, _templates
from ._storage import Location, S3Store, parse_location

__all__ = ["ArtifactsService"]

DEFAULT_LINK_EXPIRES_IN = 3600
MAX_LINK_EXPIRES_IN = 604800  # S3's limit for SigV4 presigned URLs: 7 days
DEFAULT_MAX_INLINE_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_HTML_CHARS = 2_000_000
DEADLINE_MARGIN = 0.5  # seconds kept to upload or answer once the document is made


def _setting(name: str, given: int | None, default: int, low: int, high: float = math.inf) -> int:
    raw = os.environ.get(name, "").strip()
    value = given if given is not None else int(raw) if raw else default
    if not low <= value <= high:
        msg = f"{name} must be from {low} to {high}, got {value}"
        raise ValueError(msg)
    return value


class ArtifactsService(artifacts_pb2_grpc.ArtifactsServiceServicer):
    """PDF documents from templates.

    Args:
        storage: the default storage; by default ``CONNECTOR_PROXY_ARTIFACTS_STORAGE``.
        link_expires_in: presigned links' default lifetime in seconds; by default
            ``CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN``, else 3600.
        max_inline_bytes: the largest PDF returned as a data URL; by default
            ``CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES``, else 10 MiB.
        max_html_chars: the longest rendered template; by default
            ``CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS``, else 2,000,000.
        egress: the policy S3 requests are checked against; by default the proxy's.

    Raises:
        ValueError: a setting is malformed or out of range (start-up stops).
    """

    def __init__(
        self,
        *,
        storage: str | None = None,
        link_expires_in: int | None = None,
        max_inline_bytes: int | None = None,
        max_html_chars: int | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        if storage is None:
            storage = os.environ.get("CONNECTOR_PROXY_ARTIFACTS_STORAGE", "")
        try:
            self._storage = parse_location(storage)
        except ValueError as exc:
            msg = f"CONNECTOR_PROXY_ARTIFACTS_STORAGE {exc}"
            raise ValueError(msg) from None
        self._link_expires_in = _setting(
            "CONNECTOR_PROXY_ARTIFACTS_LINK_EXPIRES_IN",
            link_expires_in,
            DEFAULT_LINK_EXPIRES_IN,
            1,
            MAX_LINK_EXPIRES_IN,
        )
        self._max_inline_bytes = _setting(
            "CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES", max_inline_bytes, DEFAULT_MAX_INLINE_BYTES, 0
        )
        self._max_html_chars = _setting(
            "CONNECTOR_PROXY_ARTIFACTS_MAX_HTML_CHARS", max_html_chars, DEFAULT_MAX_HTML_CHARS, 1
        )
        self._store = S3Store(egress or EgressPolicy.from_env())

    async def aclose(self) -> None:
        """Closes the S3 clients' connection pools."""
        self._store.close()

    async def GenerateArtifact(
        self, request: artifacts_pb2.GenerateArtifactRequest, context: Any
    ) -> artifacts_pb2.GenerateArtifactResponse:
        bad: list[errors.Violation] = []
        variables = _variables(request, bad)
        attachments = _attachments.parse(request.attachments, bad)
        location = self._storage
        if request.storage:
            try:
                location = parse_location(request.storage)
            except ValueError as exc:
                bad.append(errors.Violation("storage", str(exc)))
        raise_bad(bad)
        remaining = context.time_remaining()
        deadline = math.inf if remaining is None else time.monotonic() + remaining - DEADLINE_MARGIN

        started = time.perf_counter()
        pdf, pages, lines = await run_blocking(self._make, request.template, variables, attachments, deadline)
        for line in lines:
            log(line)
        log(f"Made {pages} pages ({len(pdf)} bytes) in {ms_since(started)} ms")
        file_name = request.id.rsplit("/", 1)[-1]
        if not file_name.lower().endswith(".pdf"):
            file_name += ".pdf"
        if location is None:
            return self._inline(pdf, pages, file_name)
        return await self._stored(request, context, location, pdf, pages, file_name)

    def _make(
        self,
        template: str,
        variables: Mapping[str, Any],
        attachments: list[_attachments.Attachment],
        deadline: float,
    ) -> tuple[bytes, int, list[str]]:
        """The PDF, its pages, and the WeasyPrint warnings for spiff__logs (in a worker thread)."""
        html = _templates.render(template, variables, deadline=deadline, max_chars=self._max_html_chars)
        with _pdf.captured_warnings() as lines:
            _check(deadline, "before the layout")
            laid = _pdf.to_pdf(html)
            _check(deadline, "before the attachments")
            pdf, pages = _attachments.append(laid, attachments)
        return pdf, pages, lines

    def _inline(self, pdf: bytes, pages: int, file_name: str) -> artifacts_pb2.GenerateArtifactResponse:
        if len(pdf) > self._max_inline_bytes:
            msg = (
                f"The PDF has {len(pdf)} bytes, more than is returned as a data URL "
                f"({self._max_inline_bytes}, CONNECTOR_PROXY_ARTIFACTS_MAX_INLINE_BYTES); store it in S3 "
                "instead (storage)."
            )
            raise errors.FailedPrecondition(msg, error_code=_templates.TOO_LARGE)
        encoded = base64.b64encode(pdf).decode()
        return artifacts_pb2.GenerateArtifactResponse(
            file_data=f"data:application/pdf;name={quote(file_name, safe='')};base64,{encoded}",
            file_name=file_name,
            size=len(pdf),
            pages=pages,
        )

    async def _stored(
        self,
        request: artifacts_pb2.GenerateArtifactRequest,
        context: Any,
        location: Location,
        pdf: bytes,
        pages: int,
        file_name: str,
    ) -> artifacts_pb2.GenerateArtifactResponse:
        key = location.key(request.id if request.id.lower().endswith(".pdf") else f"{request.id}.pdf")
        presign_for = None
        if request.HasField("generate_links") and request.generate_links:
            presign_for = (
                request.link_expires_in if request.HasField("link_expires_in") else self._link_expires_in
            )
        stored = await run_blocking(
            self._store.put, location, key, pdf, file_name, presign_for=presign_for, context=context
        )
        return artifacts_pb2.GenerateArtifactResponse(
            private_link=stored.private_link,
            presigned_link=stored.presigned_link,
            expires_at=stored.expires_at,
            file_name=file_name,
            size=len(pdf),
            pages=pages,
        )


def _variables(request: artifacts_pb2.GenerateArtifactRequest, bad: list[errors.Violation]) -> dict[str, Any]:
    """The template's variables: data's keys and ``data`` itself; the task data when data is absent."""
    if request.data.json:
        value = json_values.load_parameter(request.data, "data", bad)
    else:
        value = json_values.load(request.spiff.task_data, {}) if request.spiff.task_data.json else {}
    variables = {str(k): v for k, v in value.items()} if isinstance(value, dict) else {}
    variables.setdefault("data", value)
    return variables


def _check(deadline: float, when: str) -> None:
    if time.monotonic() > deadline:
        msg = f"The call's deadline came {when}; a long document can run as a long-running command."
        raise errors.DeadlineExceeded(msg)

"""HTML laid out as PDF by WeasyPrint, which never fetches anything.

WeasyPrint was chosen by measurement against xhtml2pdf, PyMuPDF's Story and headless Chromium
(``bench/pdf_engines.py``; README "Connectors"): it alone of the Python engines honours CSS paged
media (``@page`` size, margins and page-number boxes, page breaks, repeated table headers) and
system fonts, as Chromium does, at a fraction of Chromium's cost.

Every URL the document names (images, style sheets, fonts, attachments) goes through
:class:`DataOnly`, which reads ``data:`` URLs and refuses everything else: no HTTP, no file, so a
template cannot make the proxy call out or read its disk. WeasyPrint reports each refusal and
each CSS rule it ignores as a warning; those of a call become its ``spiff__logs`` lines (at most
``MAX_LOG_LINES``) instead of going to the proxy's log.
"""

from __future__ import annotations

import base64
import contextlib
import contextvars
import functools
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connectors._lazy import lazy_import
from connectors.smtp._attachments import parse_attachments
from server import errors

if TYPE_CHECKING:
    import weasyprint  # type: ignore[import-untyped]
    from weasyprint import urls as weasyprint_urls
else:  # imported by the first call (in its worker thread), not by discovery (about 0.5 s)
    weasyprint = lazy_import("weasyprint")
    weasyprint_urls = lazy_import("weasyprint.urls")

__all__ = ["ENGINE_UNAVAILABLE", "MAX_LOG_LINES", "RENDER_ERROR", "Laid", "images_to_pdf", "to_pdf"]

RENDER_ERROR = "ArtifactRenderError"
ENGINE_UNAVAILABLE = "PdfEngineUnavailable"
MAX_LOG_LINES = 20
IMAGE_MARGIN_PX = 38  # about 10 mm around an attached image

_captured: contextvars.ContextVar[_Lines | None] = contextvars.ContextVar("weasyprint_lines", default=None)


@dataclass(frozen=True)
class Laid:
    """A laid-out document: its PDF, page count and first page's size in CSS pixels."""

    pdf: bytes
    pages: int
    width_px: float
    height_px: float


@dataclass
class _Lines:
    """The warnings of one call: the first MAX_LOG_LINES, and how many more there were."""

    kept: list[str] = field(default_factory=list)
    more: int = 0


class _Capture(logging.Filter):
    """Keeps WeasyPrint's warnings of the current call for its spiff__logs, out of the proxy's log."""

    def filter(self, record: logging.LogRecord) -> bool:
        lines = _captured.get()
        if lines is None:
            return True
        if record.levelno < logging.WARNING:
            pass
        elif len(lines.kept) < MAX_LOG_LINES:
            lines.kept.append(f"WeasyPrint: {record.getMessage()}")
        else:
            lines.more += 1
        return False


@functools.cache
def _install_capture() -> None:
    capture = _Capture()  # on both loggers: a logger's filters do not see its children's records
    for name in ("weasyprint", "weasyprint.progress"):  # problems; the steps of each rendering (INFO)
        logging.getLogger(name).addFilter(capture)


@contextlib.contextmanager
def captured_warnings() -> Iterator[list[str]]:
    """WeasyPrint's warnings while the block runs (in this context only): at most MAX_LOG_LINES,
    then a line counting the others."""
    _install_capture()
    lines = _Lines()
    token = _captured.set(lines)
    try:
        yield lines.kept
    finally:
        _captured.reset(token)
        if lines.more:
            lines.kept.append(f"WeasyPrint: {lines.more} more warnings.")


@functools.cache
def _fetcher_class() -> type[Any]:
    class DataOnly(weasyprint_urls.URLFetcher):  # type: ignore[misc]
        """Reads ``data:`` URLs; refuses any other URL without opening it."""

        def fetch(self, url: str, headers: Any = None) -> Any:
            if url[:5].lower() != "data:":
                msg = (
                    "not fetched: documents may only embed data: URLs (nothing is read from network or disk)"
                )
                raise ValueError(msg)
            bad: list[errors.Violation] = []
            found = parse_attachments(url, bad)
            if bad or not found:
                msg = "not a readable data: URL"
                raise ValueError(msg)
            _, mime, params, content = found[0]
            content_type = "; ".join([mime, *(f"{k}={v}" for k, v in params.items())])
            return weasyprint_urls.URLFetcherResponse(url, content, {"Content-Type": content_type}, 200)

    return DataOnly


def to_pdf(html: str) -> Laid:
    """``html`` laid out and written as PDF (HTML presentational hints honoured, e.g. ``align``).

    Raises:
        server.errors.InvalidArgument: ArtifactRenderError, WeasyPrint failed on this document.
        server.errors.FailedPrecondition: PdfEngineUnavailable, the system lacks pango.
    """
    try:
        html_document = weasyprint.HTML  # the first use imports WeasyPrint, which loads pango
    except OSError as exc:
        msg = (
            "WeasyPrint cannot load the system libraries it needs (pango: on Debian, apt-get install "
            f"libpango-1.0-0 libpangoft2-1.0-0 and a font such as fonts-dejavu-core): {exc}"
        )
        raise errors.FailedPrecondition(msg, error_code=ENGINE_UNAVAILABLE) from None
    try:
        document = html_document(string=html, url_fetcher=_fetcher_class()()).render(
            presentational_hints=True
        )
        pdf: bytes = document.write_pdf()
    except Exception as exc:  # a layout WeasyPrint cannot make is this document's failure
        msg = f"The PDF could not be laid out: {type(exc).__name__}: {str(exc)[:300]}."
        raise errors.InvalidArgument(msg, error_code=RENDER_ERROR) from None
    first = document.pages[0]
    return Laid(pdf, len(document.pages), first.width, first.height)


def images_to_pdf(images: Sequence[tuple[str, bytes]], width_px: float, height_px: float) -> Laid:
    """One page of ``width_px`` by ``height_px`` per ``(media type, content)`` image, each scaled
    to fit within a 10 mm margin and centred."""
    box_width, box_height = width_px - 2 * IMAGE_MARGIN_PX, height_px - 2 * IMAGE_MARGIN_PX
    pages = "".join(
        f'<img src="data:{mime};base64,{base64.b64encode(content).decode()}">' for mime, content in images
    )
    html = (
        "<!DOCTYPE html><html><head><style>"
        f"@page {{ size: {width_px:.2f}px {height_px:.2f}px; margin: {IMAGE_MARGIN_PX}px }}"
        "body { margin: 0 }"
        f"img {{ display: block; width: {box_width:.2f}px; height: {box_height:.2f}px; object-fit: contain }}"
        "img + img { break-before: page }"
        f"</style></head><body>{pages}</body></html>"
    )
    return to_pdf(html)

"""Query and scan paging: LastEvaluatedKey followed through every page, or until ``limit`` items.

A multi-page read stops with DeadlineExceeded when the command's deadline comes first, so no scan
outlives its caller in a worker thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from spiff.connector.v1 import types_pb2

from server import errors

from ._errors import Call
from ._values import exact_json, plain

__all__ = ["paging", "read_pages"]

DEADLINE_MARGIN = 1.0  # seconds left when a multi-page read gives up, so its error arrives in time


class _Context(Protocol):
    def time_remaining(self) -> float | None: ...


class _PagedRequest(Protocol):
    limit: int
    page_size: int
    exclusive_start_key: types_pb2.JsonValue

    def HasField(self, field_name: str) -> bool: ...


def paging(
    request: _PagedRequest, bad: list[errors.Violation]
) -> tuple[int | None, int | None, dict[str, Any] | None]:
    # Their ranges (at least 1) are declared in the proto and checked before the command runs.
    limit = request.limit if request.HasField("limit") else None
    page_size = request.page_size if request.HasField("page_size") else None
    start = exact_json(request.exclusive_start_key, "exclusive_start_key", bad)
    if start is not None and not (isinstance(start, dict) and start):
        bad.append(errors.Violation("exclusive_start_key", "must be a LastEvaluatedKey object"))
        start = None
    return limit, page_size, start


def read_pages(
    read: Callable[..., dict[str, Any]],
    params: dict[str, Any],
    limit: int | None,
    page_size: int | None,
    context: _Context,
    call: Call,
) -> dict[str, Any]:
    """Follows LastEvaluatedKey until the last page or ``limit`` items; the incumbent's result shape."""
    items: list[dict[str, Any]] = []
    scanned = pages = 0
    last = params.pop("ExclusiveStartKey", None)
    while True:
        remaining = context.time_remaining()
        if remaining is not None and remaining < DEADLINE_MARGIN:
            call.done(
                f"stopped after {_count(pages, 'page')} ({_count(len(items), 'item')}): the deadline is near"
            )
            message_text = (
                f"{call.what} did not finish before the command's deadline ({_count(pages, 'page')} and "
                f"{_count(len(items), 'item')} read); read it in parts with limit and exclusive_start_key."
            )
            raise errors.DeadlineExceeded(message_text, error_code="DeadlineExceeded")
        page_params = dict(params)
        wanted = page_size
        if limit is not None:
            wanted = min(wanted or limit, limit - len(items))
        if wanted is not None:
            page_params["Limit"] = wanted
        if last is not None:
            page_params["ExclusiveStartKey"] = last
        page = read(**page_params)
        pages += 1
        items.extend(page.get("Items", ()))
        scanned += page.get("ScannedCount", 0)
        last = page.get("LastEvaluatedKey")
        if last is None or (limit is not None and len(items) >= limit):
            break
    more = "" if last is None else ", stopped at the limit"
    call.outcome = f"{_count(len(items), 'item')} ({scanned} scanned) in {_count(pages, 'page')}{more}"
    body: dict[str, Any] = {
        "Items": [plain({"M": item}) for item in items],
        "Count": len(items),
        "ScannedCount": scanned,
    }
    if last is not None:
        body["LastEvaluatedKey"] = plain({"M": last})
    return body


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"

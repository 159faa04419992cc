"""Running a plan: the time it may take, what it gave, its spiff__logs lines and its JSON result."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from connectors._timing import ms_since
from server import errors, json_values, log

__all__ = [
    "DEADLINE_MARGIN",
    "Outcome",
    "affected",
    "deadline",
    "json_safe",
    "log_outcome",
    "rows",
    "sql_result",
    "statement_text",
    "statement_timeout",
]

DEADLINE_MARGIN = 0.5  # seconds left to roll back and report before the call's deadline
MAX_LOGGED_SQL = 500


@dataclass(frozen=True)
class Outcome:
    """What a statement gave: the rows it affected, or (with fetch) its rows and column names."""

    rowcount: int
    rows: list[tuple[Any, ...]] | None = None
    columns: list[str] = field(default_factory=list)


def deadline(context: Any) -> float:
    """The loop time by which the command must have ended (inf without a call deadline)."""
    remaining = context.time_remaining()
    margin = remaining - DEADLINE_MARGIN if remaining is not None else math.inf
    return asyncio.get_running_loop().time() + margin


def statement_timeout(timeout_ms: int, budget: float) -> int:
    """statement_timeout_ms, shortened to end within the budget (seconds) the deadline leaves."""
    if math.isfinite(budget):  # the call has a deadline: the statement must end before it
        budget_ms = math.floor(budget * 1000)
        if budget_ms < 1:
            msg = "No time was left to run the statement."
            raise errors.DeadlineExceeded(msg, error_code="QueryCanceled")
        timeout_ms = min(timeout_ms, budget_ms)
    return timeout_ms


def log_outcome(outcome: Outcome, started: float) -> None:
    if outcome.rows is not None:
        log(f"-> {len(outcome.rows)} row{'s' * (len(outcome.rows) != 1)} in {ms_since(started)} ms")
    elif outcome.rowcount >= 0:
        log(f"-> {affected(outcome.rowcount)} in {ms_since(started)} ms")
    else:
        log(f"-> ok in {ms_since(started)} ms")


def statement_text(text: str) -> str:
    """The statement as logged: on one line, at most MAX_LOGGED_SQL characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_LOGGED_SQL else text[: MAX_LOGGED_SQL - 3] + "..."


def affected(rowcount: int) -> str:
    return f"{rowcount} rows affected"  # the old connector's words, for every count


def rows(outcome: Outcome, as_objects: bool, convert: Callable[[Sequence[Any]], list[Any]]) -> list[Any]:
    """The fetched rows, each converted to its JSON form: lists in column order, or objects."""
    converted = [convert(row) for row in outcome.rows or []]
    if as_objects:
        return [dict(zip(outcome.columns, row, strict=True)) for row in converted]
    return converted


def sql_result(outcome: Outcome, fetched: list[Any] | None) -> Any:
    """DoSQL's body: the fetched rows (None when the statement's rows were not asked for), else
    ``{"result": "N rows affected", "rowcount": N}``, or ``{"result": "ok"}`` without a count."""
    if fetched is not None:
        if outcome.rows is None:
            log("The statement returned no rows to fetch.")
        return fetched
    if outcome.rowcount < 0:
        return {"result": "ok"}
    return {"result": affected(outcome.rowcount), "rowcount": outcome.rowcount}


def json_safe(value: Any) -> Any:
    """A value JSON has no type for in its documented JSON form, else the driver's text for it."""
    try:
        return json_values.to_json_safe(value)
    except TypeError:
        return str(value)

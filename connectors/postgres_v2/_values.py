"""PostgreSQL values as JSON: what psycopg loads, in the form results carry.

numeric as ``server.json_values`` documents for Decimal, timestamps, dates and times as ISO 8601
text, interval as seconds, uuid as text, bytea as base64, json/jsonb as JSON, arrays as lists, NaN
and infinite floats as the text PostgreSQL writes, dates and timestamps Python cannot hold
(infinity, BC, after 9999) and other types (inet, ranges, money, geometric) as their PostgreSQL text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader

from connectors._sql import execution

__all__ = ["configure", "rows"]


def rows(outcome: execution.Outcome, as_objects: bool) -> list[Any]:
    return execution.rows(outcome, as_objects, _row)


def _row(row: Sequence[Any]) -> list[Any]:
    return [_cell(value) for value in row]


_FLOAT_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _cell(value: Any) -> Any:
    """A value as psycopg loaded it, in its JSON form (see the module docstring)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _FLOAT_TEXT.get(value, "NaN")
    if isinstance(value, list | tuple):
        return [_cell(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _cell(item) for key, item in value.items()}
    return execution.json_safe(value)  # inet, ranges, money, geometric types as text


def _as_text_when_out_of_range(base: type[Any]) -> type[Any]:
    """A date/timestamp loader that gives PostgreSQL's own text for what Python cannot hold
    (``infinity``, ``-infinity``, years after 9999 or BC) instead of failing the whole result."""

    class Loader(base):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            try:
                return super().load(data)
            except psycopg.DataError:
                return bytes(data).decode()

    Loader.__name__ = Loader.__qualname__ = f"TextFallback{base.__name__}"
    return Loader


_LOADERS = {
    "date": _as_text_when_out_of_range(DateLoader),
    "timestamp": _as_text_when_out_of_range(TimestampLoader),
    "timestamptz": _as_text_when_out_of_range(TimestamptzLoader),
}


async def configure(conn: psycopg.AsyncConnection[Any]) -> None:
    """Registers the loaders on each new pooled connection."""
    for name, loader in _LOADERS.items():
        conn.adapters.register_loader(name, loader)

"""MySQL values as JSON: what PyMySQL returns, in the form results carry.

DECIMAL as ``server.json_values`` documents for Decimal, DATETIME and DATE as ISO 8601 text, TIME
as seconds, BLOB/BINARY as base64, SET as its text ("a,c"), MySQL's JSON type parsed (MariaDB's
JSON type is text and stays text), zero dates as MySQL's text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from typing import Any

from connectors._sql import execution
from server import json_values

__all__ = ["JSON_TYPE", "Outcome", "rows"]

JSON_TYPE = 245  # MySQL's JSON column type (MariaDB's JSON is LONGTEXT)


@dataclass(frozen=True)
class Outcome(execution.Outcome):
    json_columns: frozenset[int] = frozenset()  # the columns of MySQL's JSON type


def rows(outcome: Outcome, as_objects: bool) -> list[Any]:
    def convert(row: Sequence[Any]) -> list[Any]:
        return [_json(value) if i in outcome.json_columns else _cell(value) for i, value in enumerate(row)]

    return execution.rows(outcome, as_objects, convert)


def _json(value: Any) -> Any:
    if isinstance(value, str):
        with suppress(ValueError):
            return json_values.loads(value)
    return _cell(value)


def _cell(value: Any) -> Any:
    """A value as PyMySQL returned it, in its JSON form (see the module docstring)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, set | frozenset):
        return ",".join(sorted(value))  # SET as MySQL writes it (MariaDB sends it as that text)
    return execution.json_safe(value)

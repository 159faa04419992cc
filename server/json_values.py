"""Lossless free-form JSON: converting between Python values and ``spiff.connector.v1.JsonValue``."""

from __future__ import annotations

import json
from typing import Any

from spiff.connector.v1 import types_pb2

__all__ = ["JSON_VALUE", "dump", "dumps", "load", "loads"]

JSON_VALUE = types_pb2.JsonValue.DESCRIPTOR.full_name
_ABSENT: Any = object()


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def dumps(value: Any) -> str:
    """Compact JSON text; integers of any size stay integers; NaN and Infinity are refused."""
    return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def loads(text: str | bytes) -> Any:
    """Parses strict JSON (no NaN or Infinity), keeping integers exact."""
    return json.loads(text, parse_constant=_reject_constant)


def dump(value: Any) -> types_pb2.JsonValue:
    """Wraps a Python value as a JsonValue."""
    return types_pb2.JsonValue(json=dumps(value))


def load(value: types_pb2.JsonValue, default: Any = None) -> Any:
    """Unwraps a JsonValue; an empty one (field not set) gives ``default``."""
    if not value.json:
        return default
    return loads(value.json)

"""Lossless free-form JSON: converting between Python values and ``spiff.connector.v1.JsonValue``."""

from __future__ import annotations

import json
import math
from typing import Any

from spiff.connector.v1 import types_pb2

__all__ = ["JSON_VALUE", "dump", "dumps", "load", "loads"]

JSON_VALUE = types_pb2.JsonValue.DESCRIPTOR.full_name
_ABSENT: Any = object()


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        msg = f"the number {text[:40]} is out of range"
        raise ValueError(msg)
    return number


# Built once: json.loads/json.dumps with options would build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dumps(value: Any) -> str:
    """Compact JSON text; integers of any size stay integers; NaN and Infinity are refused.

    Raises:
        ValueError: the value is not JSON (NaN, Infinity, other types) or is nested too deeply.
    """
    try:
        return _ENCODER.encode(value)
    except RecursionError:
        msg = "the value is nested too deeply to write as JSON"
        raise ValueError(msg) from None


def loads(text: str | bytes) -> Any:
    """Parses strict JSON (no NaN or Infinity, nor numbers like 1e400 that overflow to them),
    keeping integers exact.

    Raises:
        ValueError: the text is not such JSON, or is nested too deeply to parse.
    """
    if isinstance(text, bytes):
        text = text.decode()  # JSON between systems is UTF-8 (RFC 8259 §8.1)
    try:
        return _DECODER.decode(text)
    except RecursionError:
        msg = "the JSON is nested too deeply"
        raise ValueError(msg) from None


def dump(value: Any) -> types_pb2.JsonValue:
    """Wraps a Python value as a JsonValue."""
    return types_pb2.JsonValue(json=dumps(value))


def load(value: types_pb2.JsonValue, default: Any = None) -> Any:
    """Unwraps a JsonValue; an empty one (field not set) gives ``default``."""
    if not value.json:
        return default
    return loads(value.json)

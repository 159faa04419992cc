"""Lossless free-form JSON: converting between Python values and ``spiff.connector.v1.JsonValue``."""

from __future__ import annotations

import base64
import datetime
import decimal
import json
import math
import uuid
from typing import Any

from spiff.connector.v1 import types_pb2

from server import errors

__all__ = ["JSON_VALUE", "dump", "dumps", "iso_timestamp", "load", "load_parameter", "loads", "to_json_safe"]

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


def to_json_safe(value: Any) -> Any:
    """The documented JSON form of a value JSON has no type for (what databases and SDKs return).

    - ``Decimal``: an integer when integral; a number when that number is exactly the decimal
      (``12.50`` → ``12.5``); otherwise, rather than lose digits, its exact text
      (``"0.1000000000000000000001"``).
    - ``datetime``, ``date``, ``time``: ISO 8601 text (``"2026-01-02T03:04:05+00:00"``, ``"2026-01-02"``).
    - ``timedelta``: its length in seconds, a number.
    - ``UUID``: its canonical text. ``bytes``: base64 text. ``set``: a list.

    Raises:
        TypeError: for any other type.
    """
    if isinstance(value, decimal.Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        number = float(value)
        if math.isfinite(number) and decimal.Decimal(repr(number)) == value:
            return number
        return str(value)
    if isinstance(value, datetime.date | datetime.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, datetime.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if isinstance(value, set | frozenset):
        return list(value)
    msg = f"a {type(value).__name__} is not JSON"
    raise TypeError(msg)


# Built once: json.loads/json.dumps with options would build a new decoder/encoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=to_json_safe)


def iso_timestamp(seconds: float) -> str:
    """Seconds since the epoch as the views (jobs, upstreams) show times: ISO 8601 UTC, ms, ``Z``."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def dumps(value: Any) -> str:
    """Compact JSON text; integers of any size stay integers; NaN and Infinity are refused;
    Decimal, datetime, UUID, bytes and the like take the forms :func:`to_json_safe` documents.

    Raises:
        ValueError: the value is not JSON (NaN, Infinity, other types) or is nested too deeply.
    """
    try:
        return _ENCODER.encode(value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    except RecursionError:
        msg = "the value is nested too deeply to write as JSON"
        raise ValueError(msg) from None


def loads(text: str | bytes) -> Any:
    """Parses strict JSON (no NaN or Infinity, nor numbers like 1e400 that overflow to them, nor
    lone surrogates), keeping integers exact (up to CPython's 4,300 digits).

    Raises:
        ValueError: the text is not such JSON, or is nested too deeply to parse.
    """
    if isinstance(text, bytes):
        text = text.decode()  # JSON between systems is UTF-8 (RFC 8259 §8.1)
    try:
        value = _DECODER.decode(text)
    except RecursionError:
        msg = "the JSON is nested too deeply"
        raise ValueError(msg) from None
    if "\\ud" in text or "\\uD" in text:  # a surrogate escape: rare, so checked only then
        _refuse_lone_surrogates(value)
    return value


def _refuse_lone_surrogates(value: Any) -> None:
    """JSON may escape half of a UTF-16 pair alone ("\\ud800"): valid JSON, but not Unicode text,
    which no string field, log line or answer can hold (RFC 8259 §8.2 leaves it to the parser)."""
    try:
        _ENCODER.encode(value).encode()
    except UnicodeEncodeError:
        msg = "the JSON holds a lone surrogate (a \\ud800-\\udfff escape that is not half of a pair)"
        raise ValueError(msg) from None


def dump(value: Any) -> types_pb2.JsonValue:
    """Wraps a Python value as a JsonValue."""
    return types_pb2.JsonValue(json=dumps(value))


def load(value: types_pb2.JsonValue, default: Any = None) -> Any:
    """Unwraps a JsonValue; an empty one (field not set) gives ``default``."""
    if not value.json:
        return default
    return loads(value.json)


def load_parameter(value: types_pb2.JsonValue, name: str, bad: list[errors.Violation]) -> Any:
    """A ``JsonValue`` parameter's JSON; when it is not JSON, None, with ``name`` recorded in ``bad``
    (so a command can report every bad parameter at once)."""
    try:
        return load(value)
    except ValueError:
        bad.append(errors.Violation(name, "is not valid JSON"))
        return None

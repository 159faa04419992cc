"""DynamoDB values: request JSON to DynamoDB's typed form, and typed values back to JSON.

Items are read from the request's JSON with every number as a Decimal (nested ones too), so 8.1 is
stored as 8.1 and not as a float's binary approximation; results turn numbers back into JSON
numbers (integers when integral, text when a float cannot hold every digit:
``server.json_values``), binary values into base64 text and sets into sorted lists.
"""

from __future__ import annotations

import base64
import binascii
import decimal
import json
from typing import TYPE_CHECKING, Any

from spiff.connector.v1 import types_pb2

from connectors._lazy import lazy_import
from server import errors, json_values

if TYPE_CHECKING:
    from boto3.dynamodb import types as dynamodb_types  # type: ignore[import-untyped]
else:  # imported by the first call (in its worker thread), not by discovery: about 11 MiB and 120 ms
    dynamodb_types = lazy_import("boto3.dynamodb.types")

__all__ = ["exact_json", "item_attributes", "key_value", "plain", "typed_key"]


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


_DECIMAL_JSON = json.JSONDecoder(parse_float=decimal.Decimal, parse_constant=_reject_constant)


def exact_json(value: types_pb2.JsonValue, name: str, bad: list[errors.Violation]) -> Any:
    """The parameter's JSON with every non-integer number a Decimal (exact, as DynamoDB wants)."""
    try:
        return _DECIMAL_JSON.decode(value.json) if value.json else None
    except (ValueError, RecursionError):
        bad.append(errors.Violation(name, "is not valid JSON"))
        return None


def _typed(value: Any, name: str, bad: list[errors.Violation]) -> Any:
    """DynamoDB's typed form ({"N": "8.1"}, {"M": {...}}) of a JSON value."""
    try:
        return dynamodb_types.TypeSerializer().serialize(value)
    except decimal.DecimalException:
        bad.append(
            errors.Violation(
                name, "has a number DynamoDB cannot store exactly (38 significant digits, 1e-130 to 1e126)"
            )
        )
    except (TypeError, ValueError) as exc:
        bad.append(errors.Violation(name, f"cannot be stored in DynamoDB: {exc}"))
    return None


def item_attributes(value: types_pb2.JsonValue, bad: list[errors.Violation]) -> dict[str, Any]:
    known = len(bad)
    item = exact_json(value, "item_data", bad)
    if not isinstance(item, dict):
        if len(bad) == known:
            bad.append(errors.Violation("item_data", "must be a JSON object"))
        return {}
    typed = _typed(item, "item_data", bad)
    return typed["M"] if typed else {}


def plain(value: dict[str, Any]) -> Any:
    """The JSON form of one DynamoDB typed value (see the module docstring)."""
    ((kind, data),) = value.items()
    if kind in ("S", "BOOL"):
        return data
    if kind == "N":
        return json_values.to_json_safe(decimal.Decimal(data))
    if kind == "NULL":
        return None
    if kind == "M":
        return {key: plain(item) for key, item in data.items()}
    if kind == "L":
        return [plain(item) for item in data]
    if kind == "B":
        return base64.b64encode(data).decode()
    if kind == "SS":
        return sorted(data)
    if kind == "NS":
        return [json_values.to_json_safe(n) for n in sorted(decimal.Decimal(x) for x in data)]
    if kind == "BS":
        return [base64.b64encode(b).decode() for b in sorted(data)]
    msg = f"unknown DynamoDB type {kind}"
    raise ValueError(msg)


def key_value(text: str, kind: str, name: str, bad: list[errors.Violation]) -> dict[str, Any]:
    """A key parameter (text) as the key attribute's type: S, N or B (base64)."""
    if kind == "N":
        try:
            number = decimal.Decimal(text.strip())
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
        if not number.is_finite():
            bad.append(errors.Violation(name, "must be a number: the table's key is a number"))
        return {"N": text.strip()}
    if kind == "B":
        try:
            return {"B": base64.b64decode(text, validate=True)}
        except binascii.Error:
            bad.append(errors.Violation(name, "must be base64 text: the table's key is binary"))
            return {"B": b""}
    return {"S": text}


def typed_key(key: Any, schema: dict[str, tuple[str, str]], bad: list[errors.Violation]) -> dict[str, Any]:
    """An exclusive_start_key (a LastEvaluatedKey as returned) in DynamoDB's typed form."""
    if not isinstance(key, dict) or not key:
        bad.append(errors.Violation("exclusive_start_key", "must be a LastEvaluatedKey object"))
        return {}
    types = dict(schema.values())
    typed = {}
    for name, value in key.items():
        kind = types.get(name)
        if (
            kind is not None
            and isinstance(value, str | int | decimal.Decimal)
            and not isinstance(value, bool)
        ):
            typed[name] = key_value(str(value), kind, f"exclusive_start_key.{name}", bad)
        else:
            typed[name] = _typed(value, f"exclusive_start_key.{name}", bad)
    return typed

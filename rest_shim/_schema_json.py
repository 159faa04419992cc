"""JSON Schema for protobuf fields, following how the shim reads and writes JSON.

A parameter's schema says exactly what the decoder and the field's declared constraints accept,
coercions included: ``"5"`` or ``5.0`` for an integer, ``"true"`` or ``1`` for a boolean, ``5``
for a string, ``"2.5"`` for a number, ``null`` for an absent parameter.
"""

from __future__ import annotations

import re
from typing import Any

from google.protobuf import descriptor

from server import json_values
from server.schema import (
    enum_type,
    field_bounds,
    field_options,
    is_map,
    is_message,
    is_repeated,
    message_type,
)

__all__ = [
    "BASE64_TEXT",
    "BOOL_TEXT",
    "INT_RANGES",
    "INT_TEXT",
    "NUMBER_TEXT",
    "allowed_values",
    "enum_prefix",
    "field_schema",
    "int_text_pattern",
    "spiff_type",
]

FD = descriptor.FieldDescriptor

INT_RANGES: dict[int, tuple[int, int]] = {
    FD.TYPE_INT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FD.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FD.TYPE_INT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FD.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FD.TYPE_UINT32: (0, 2**32 - 1),
    FD.TYPE_FIXED32: (0, 2**32 - 1),
    FD.TYPE_UINT64: (0, 2**64 - 1),
    FD.TYPE_FIXED64: (0, 2**64 - 1),
}

# The text forms the decoder accepts for scalars, shared with it so that schema and decoder agree:
# ASCII only, in the syntax Python's re, ECMAScript and Rust's regex share.
_SPACE = r"[\t\n\x0b\x0c\r ]*"
INT_TEXT = _SPACE + "[+-]?[0-9]+" + _SPACE
BOOL_TEXT = _SPACE + "(?:[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])" + _SPACE
# A number's text has at most two exponent digits, so that its value is finite (short of a
# mantissa of more than 200 digits, which the decoder refuses as not finite).
_EXPONENT = "(?:[eE][+-]?[0-9]{1,2})?"
_NUMBER = r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)" + _EXPONENT
NUMBER_TEXT = _SPACE + "[+-]?" + _NUMBER + _SPACE
_ZERO = r"(?:0+(?:\.0*)?|\.0+)" + _EXPONENT
_POSITIVE = r"(?:0*[1-9][0-9]*(?:\.[0-9]*)?|0*\.0*[1-9][0-9]*)" + _EXPONENT
BASE64_TEXT = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"


def _anchored(pattern: str) -> str:
    return f"^(?:{pattern})$"


def int_text_pattern(low: int, high: int) -> str:
    """A pattern of the integer texts (``INT_TEXT``) whose value lies in ``[low, high]``."""
    forms = []
    if low <= 0 <= high:
        forms.append("[+-]?0+")
    if high >= 1:
        forms.append(r"\+?0*" + _digits_between(max(low, 1), high))
    if low <= -1:
        forms.append("-0*" + _digits_between(max(-high, 1), -low))
    return _SPACE + "(?:" + "|".join(forms) + ")" + _SPACE


def _digits_between(low: int, high: int) -> str:
    """A pattern of the decimal numbers in ``[low, high]`` (1 <= low <= high), no leading zeros."""
    parts = []
    for size in range(len(str(low)), len(str(high)) + 1):
        first, last = max(low, 10 ** (size - 1)), min(high, 10**size - 1)
        parts.extend(_same_length(str(first), str(last)))
    return "(?:" + "|".join(parts) + ")"


def _same_length(low: str, high: str) -> list[str]:
    """Patterns of the digit strings of this length from ``low`` to ``high``, in order."""
    if not low:
        return [""]
    if low[0] == high[0]:
        return [low[0] + rest for rest in _same_length(low[1:], high[1:])]
    size = len(low) - 1
    tail = f"[0-9]{{{size}}}" if size else ""
    first, last = int(low[0]), int(high[0])
    parts: list[str] = []
    if low[1:] != "0" * size:
        parts.extend(low[0] + rest for rest in _same_length(low[1:], "9" * size))
        first += 1
    upper = []
    if high[1:] != "9" * size:
        upper = [high[0] + rest for rest in _same_length("0" * size, high[1:])]
        last -= 1
    if first <= last:
        parts.append((str(first) if first == last else f"[{first}-{last}]") + tail)
    return parts + upper


def enum_prefix(enum: descriptor.EnumDescriptor) -> str:
    """The prefix an enum's value names share by convention: ``BODY_FORMAT_`` for BodyFormat."""
    words = re.sub(r"(?<!^)(?=[A-Z])", "_", enum.name).upper()
    return words + "_"


def spiff_type(field: descriptor.FieldDescriptor) -> str:
    """spiff's parameter type: ``str``, ``int``, ``bool`` or, for anything richer, ``any``."""
    if is_repeated(field):
        return "any"
    if field.type in (FD.TYPE_STRING, FD.TYPE_BYTES, FD.TYPE_ENUM):
        return "str"
    if field.type == FD.TYPE_BOOL:
        return "bool"
    if field.type in INT_RANGES:
        return "int"
    return "any"


def allowed_values(field: descriptor.FieldDescriptor) -> list[str]:
    """The values of a string field with ``allowed_values``, or the names of an enum field."""
    if field.type == FD.TYPE_ENUM:
        return [v.name for v in enum_type(field).values]
    if field.type == FD.TYPE_STRING:
        return list(field_options(field).allowed_values)
    return []


def field_schema(field: descriptor.FieldDescriptor, *, _depth: int = 0) -> dict[str, Any]:
    """The JSON Schema of one field's value (a parameter, or a member of a nested object), with
    its description, default and examples.

    ``null`` stands for an absent field, so it is allowed unless the field is required; a required
    field also refuses the values that leave it absent (``""``, ``[]``, ``{}``).
    """
    options = field_options(field)
    if is_map(field):
        value_field = message_type(field).fields_by_name["value"]
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": _value_schema(value_field, _depth),
        }
        key_pattern = _key_pattern(message_type(field).fields_by_name["key"])
        if key_pattern:
            schema["propertyNames"] = {"pattern": key_pattern}
        if options.required:
            schema["minProperties"] = 1
    elif is_repeated(field):
        schema = {"type": "array", "items": _value_schema(field, _depth)}
        if options.required:
            schema["minItems"] = 1
    else:
        schema = _value_schema(field, _depth)
        if options.required:
            _refuse_absent(field, schema)
    if not options.required:
        _allow_null(schema)
    if options.description:
        schema["description"] = options.description
    if options.default_json:
        schema["default"] = json_values.loads(options.default_json)
    if options.examples_json:
        schema["examples"] = [json_values.loads(e) for e in options.examples_json]
    if options.secret:
        schema["writeOnly"] = True
    return schema


def _allow_null(schema: dict[str, Any]) -> None:
    kinds = schema.get("type")
    if isinstance(kinds, str):
        schema["type"] = [kinds, "null"]
    elif isinstance(kinds, list):
        schema["type"] = [*kinds, "null"]
    elif "anyOf" in schema:
        schema["anyOf"] = [*schema["anyOf"], {"type": "null"}]
    # Otherwise (free-form JSON) null is allowed already.
    if "enum" in schema:
        schema["enum"] = [*schema["enum"], None]


def _refuse_absent(field: descriptor.FieldDescriptor, schema: dict[str, Any]) -> None:
    """A required field's schema without the values that leave it absent."""
    if field.type == FD.TYPE_MESSAGE:
        if not schema:  # free-form JSON: anything but null
            schema["not"] = {"type": "null"}
        return
    if field.has_presence:
        return
    if field.type == FD.TYPE_STRING:
        if "enum" not in schema:
            schema["minLength"] = max(1, schema.get("minLength", 0))
    elif field.type == FD.TYPE_BYTES:
        schema["minLength"] = 1
    elif field.type == FD.TYPE_BOOL:
        schema["not"] = {"anyOf": [{"enum": [False, 0]}, {"type": "string", "pattern": "[Ff]"}]}
    elif field.type == FD.TYPE_ENUM:
        zero = enum_type(field).values_by_number[0]
        schema["not"] = {"enum": [0, zero.name]}
    else:
        # An integer or a number without presence is absent at 0 (its text too).
        schema["not"] = {
            "anyOf": [
                {"const": 0},
                {"type": "string", "pattern": _anchored(_SPACE + "[+-]?" + _ZERO + _SPACE)},
            ]
        }


def _key_pattern(key: descriptor.FieldDescriptor) -> str | None:
    if key.type in INT_RANGES:
        return _anchored(int_text_pattern(*INT_RANGES[key.type]))
    if key.type == FD.TYPE_BOOL:
        return _anchored(BOOL_TEXT)
    return None


def _value_schema(field: descriptor.FieldDescriptor, depth: int) -> dict[str, Any]:
    kind = field.type
    bounds = field_bounds(field)
    if kind == FD.TYPE_STRING:
        allowed = list(field_options(field).allowed_values)
        if allowed:
            return {"type": "string", "enum": allowed}
        if bounds is None:
            return {"type": ["string", "number"]}  # a number is taken as its text
        # With a declared length or pattern, only text is taken.
        schema: dict[str, Any] = {"type": "string"}
        if bounds.min_length is not None:
            schema["minLength"] = bounds.min_length
        if bounds.max_length is not None:
            schema["maxLength"] = bounds.max_length
        if bounds.pattern is not None:
            schema["pattern"] = _anchored(bounds.pattern.pattern)
        return schema
    if kind == FD.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64", "pattern": _anchored(BASE64_TEXT)}
    if kind == FD.TYPE_BOOL:
        # true and false, as such, as text in any case, or as 0 and 1.
        return {
            "type": ["boolean", "string", "integer"],
            "pattern": _anchored(BOOL_TEXT),
            "minimum": 0,
            "maximum": 1,
        }
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if bounds is not None and bounds.minimum is not None:
            low = max(low, int(bounds.minimum))
        if bounds is not None and bounds.maximum is not None:
            high = min(high, int(bounds.maximum))
        # An integer (5.0 is one), or its text.
        return {
            "type": ["integer", "string"],
            "minimum": low,
            "maximum": high,
            "pattern": _anchored(int_text_pattern(low, high)),
        }
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        # A number, or its text.
        schema = {"type": ["number", "string"], "pattern": _anchored(NUMBER_TEXT)}
        if bounds is not None and bounds.minimum is not None:
            if bounds.exclusive_minimum:
                schema["exclusiveMinimum"] = 0
                schema["pattern"] = _anchored(_SPACE + r"\+?" + _POSITIVE + _SPACE)
            else:
                schema["minimum"] = 0
                schema["pattern"] = _anchored(_SPACE + rf"(?:\+?{_NUMBER}|-{_ZERO})" + _SPACE)
        return schema
    if kind == FD.TYPE_ENUM:
        return _enum_schema(enum_type(field))
    if is_message(field, json_values.JSON_VALUE):
        return {}
    return message_schema(message_type(field), depth + 1)


def _enum_schema(enum: descriptor.EnumDescriptor) -> dict[str, Any]:
    """An enum's names, in any case and with or without the type's prefix, or its numbers."""
    prefix = enum_prefix(enum)
    spellings = dict.fromkeys(s for v in enum.values for s in (v.name, v.name.removeprefix(prefix)))
    any_case = "|".join(
        "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in s) for s in spellings
    )
    return {
        "anyOf": [
            {"type": "string", "pattern": _anchored(any_case)},
            {"type": "integer", "enum": [v.number for v in enum.values]},
        ]
    }


def message_schema(desc: descriptor.Descriptor, depth: int = 0) -> dict[str, Any]:
    """An object schema for a nested message (recursion is cut off at a depth of 8)."""
    if depth > 8:
        return {"type": "object"}
    properties = {f.name: field_schema(f, _depth=depth) for f in desc.fields}
    schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
    required = [f.name for f in desc.fields if field_options(f).required]
    if required:
        schema["required"] = required
    return schema

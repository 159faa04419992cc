"""JSON Schema for protobuf fields, following how the shim reads and writes JSON."""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor

from server import json_values
from server.schema import enum_type, field_options, is_map, is_message, is_repeated, message_type

__all__ = ["INT_RANGES", "field_schema", "spiff_type"]

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


def field_schema(field: descriptor.FieldDescriptor, *, _depth: int = 0) -> dict[str, Any]:
    """The JSON Schema of one field's value, with its description, default and examples."""
    if is_map(field):
        value_field = message_type(field).fields_by_name["value"]
        schema: dict[str, Any] = {
            "type": "object",
            "additionalProperties": _value_schema(value_field, _depth),
        }
    elif is_repeated(field):
        schema = {"type": "array", "items": _value_schema(field, _depth)}
    else:
        schema = _value_schema(field, _depth)
    options = field_options(field)
    if options.description:
        schema["description"] = options.description
    if options.default_json:
        schema["default"] = json_values.loads(options.default_json)
    if options.examples_json:
        schema["examples"] = [json_values.loads(e) for e in options.examples_json]
    if options.secret:
        schema["writeOnly"] = True
    return schema


def _value_schema(field: descriptor.FieldDescriptor, depth: int) -> dict[str, Any]:
    kind = field.type
    if kind == FD.TYPE_STRING:
        allowed = list(field_options(field).allowed_values)
        return {"type": "string", "enum": allowed} if allowed else {"type": "string"}
    if kind == FD.TYPE_BYTES:
        return {"type": "string", "contentEncoding": "base64"}
    if kind == FD.TYPE_BOOL:
        return {"type": "boolean"}
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        return {"type": "integer", "minimum": low, "maximum": high}
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return {"type": "number"}
    if kind == FD.TYPE_ENUM:
        return {"type": "string", "enum": [v.name for v in enum_type(field).values]}
    if is_message(field, json_values.JSON_VALUE):
        return {}
    return message_schema(message_type(field), depth + 1)


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

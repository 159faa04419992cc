"""JSON ⇄ protobuf for spiff's dialect, driven by descriptors and planned once per message.

Decoding is lenient where it loses nothing (``"5"`` for an int, ``"true"`` for a bool,
``5`` for a string) and strict otherwise, and it reports every bad field at once.
``null`` means absent. Free-form ``JsonValue`` fields carry any JSON, integers exact.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from typing import Any

from google.protobuf import descriptor, json_format, message, message_factory

from rest_shim._schema_json import BASE64_TEXT, BOOL_TEXT, INT_RANGES, INT_TEXT, NUMBER_TEXT, enum_prefix
from server import json_values
from server.errors import Violation
from server.schema import (
    SPIFF_CONTEXT,
    MessagePlan,
    enum_type,
    field_bounds,
    field_options,
    is_map,
    is_message,
    is_repeated,
    message_type,
)

__all__ = ["DecodeResult", "Decoder", "ResultLayout", "encode_message"]

FD = descriptor.FieldDescriptor
# The text forms of scalars: exactly those the JSON Schema states (rest_shim._schema_json).
_INT_TEXT = re.compile(INT_TEXT)
_BOOL_TEXT = re.compile(BOOL_TEXT)
_NUMBER_TEXT = re.compile(NUMBER_TEXT)
_BASE64_TEXT = re.compile(BASE64_TEXT)
_WELL_KNOWN_PREFIX = "google.protobuf."
_RESERVED_PREFIXES = ("spiff__", "proxy__")


class _Bad(Exception):
    """A value that cannot become the field's type; the text completes '<field> ...'."""


Convert = Callable[[Any, str, list[Violation]], Any]


def _scalar_converter(field: descriptor.FieldDescriptor) -> Convert:
    kind = field.type
    if kind == FD.TYPE_STRING:
        allowed = frozenset(field_options(field).allowed_values)
        # A field with a declared length or pattern takes text only.
        takes_numbers = field_bounds(field) is None

        def to_str(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, str):
                text = value
            elif takes_numbers and isinstance(value, int | float) and not isinstance(value, bool):
                text = str(value)
            else:
                msg = "must be a string"
                raise _Bad(msg)
            if allowed and text not in allowed:
                msg = f"must be one of {', '.join(sorted(allowed))}"
                raise _Bad(msg)
            return text

        return to_str
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]

        def to_int(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, bool):
                msg = "must be an integer, not a boolean"
                raise _Bad(msg)
            if isinstance(value, int):
                number = value
            elif (isinstance(value, float) and value.is_integer()) or (
                isinstance(value, str) and _INT_TEXT.fullmatch(value)
            ):
                try:
                    number = int(value)
                except ValueError:  # over 4300 digits
                    msg = "must be an integer"
                    raise _Bad(msg) from None
            else:
                msg = "must be an integer"
                raise _Bad(msg)
            if not low <= number <= high:
                msg = f"must be between {low} and {high}"
                raise _Bad(msg)
            return number

        return to_int
    if kind == FD.TYPE_BOOL:

        def to_bool(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and _BOOL_TEXT.fullmatch(value):
                return value.strip().lower() == "true"
            if isinstance(value, int | float) and value in (0, 1):
                return bool(value)
            msg = "must be a boolean"
            raise _Bad(msg)

        return to_bool
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):

        def to_float(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, int | float) and not isinstance(value, bool):
                try:
                    return float(value)
                except OverflowError:  # an integer beyond a double's range, e.g. 10**400
                    msg = "is out of range for a number"
                    raise _Bad(msg) from None
            if isinstance(value, str) and _NUMBER_TEXT.fullmatch(value):
                number = float(value)
                if math.isfinite(number):
                    return number
            msg = "must be a number"
            raise _Bad(msg)

        return to_float
    if kind == FD.TYPE_BYTES:

        def to_bytes(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, str) and _BASE64_TEXT.fullmatch(value):
                try:
                    return base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    pass
            msg = "must be base64 text"
            raise _Bad(msg)

        return to_bytes
    if kind == FD.TYPE_ENUM:
        enum = enum_type(field)
        prefix = enum_prefix(enum)
        by_name: dict[str, int] = {}
        for v in enum.values:
            by_name[v.name.lower()] = v.number
            by_name[v.name.removeprefix(prefix).lower()] = v.number
        numbers = frozenset(v.number for v in enum.values)

        def to_enum(value: Any, path: str, bad: list[Violation]) -> Any:
            if isinstance(value, str) and value.lower() in by_name:
                return by_name[value.lower()]
            if isinstance(value, int | float) and not isinstance(value, bool) and value in numbers:
                return int(value)
            msg = f"must be one of {', '.join(v.name.removeprefix(prefix).lower() for v in enum.values)}"
            raise _Bad(msg)

        return to_enum
    # Messages.
    if is_message(field, json_values.JSON_VALUE):
        json_class = message_factory.GetMessageClass(message_type(field))

        def to_json_value(value: Any, path: str, bad: list[Violation]) -> Any:
            try:
                return json_class(json=json_values.dumps(value))
            except ValueError as exc:
                msg = f"cannot be carried as JSON: {exc}"
                raise _Bad(msg) from None

        return to_json_value
    if message_type(field).full_name.startswith(_WELL_KNOWN_PREFIX):
        wkt_class = message_factory.GetMessageClass(message_type(field))

        def to_well_known(value: Any, path: str, bad: list[Violation]) -> Any:
            try:
                return json_format.ParseDict(value, wkt_class())
            except json_format.ParseError as exc:
                msg = f"is not a valid {message_type(field).name}: {exc}"
                raise _Bad(msg) from None

        return to_well_known
    nested = Decoder(message_type(field))

    def to_message(value: Any, path: str, bad: list[Violation]) -> Any:
        if not isinstance(value, dict):
            msg = "must be an object"
            raise _Bad(msg)
        return nested.decode_into(value, path + ".", bad, ignored=None)

    return to_message


def _field_converter(field: descriptor.FieldDescriptor) -> Convert:
    if is_map(field):
        key_convert = _scalar_converter(message_type(field).fields_by_name["key"])
        value_convert = _scalar_converter(message_type(field).fields_by_name["value"])

        def to_map(value: Any, path: str, bad: list[Violation]) -> Any:
            if not isinstance(value, dict):
                msg = "must be an object"
                raise _Bad(msg)
            result = {}
            for key, item in value.items():
                item_path = f"{path}[{key!r}]"
                if item is None:
                    bad.append(Violation(item_path, "must not be null"))
                    continue
                try:
                    result[key_convert(key, item_path, bad)] = value_convert(item, item_path, bad)
                except _Bad as exc:
                    bad.append(Violation(item_path, str(exc)))
            return result

        return to_map
    if is_repeated(field):
        item_convert = _scalar_converter(field)

        def to_list(value: Any, path: str, bad: list[Violation]) -> Any:
            if not isinstance(value, list):
                msg = "must be a list"
                raise _Bad(msg)
            result = []
            for index, item in enumerate(value):
                item_path = f"{path}[{index}]"
                if item is None:
                    bad.append(Violation(item_path, "must not be null"))
                    continue
                try:
                    result.append(item_convert(item, item_path, bad))
                except _Bad as exc:
                    bad.append(Violation(item_path, str(exc)))
            return result

        return to_list
    return _scalar_converter(field)


class DecodeResult:
    """A decoded request, the fields that were wrong, and the keys that were ignored."""

    __slots__ = ("ignored", "message", "violations")

    def __init__(self, msg: message.Message | None, violations: list[Violation], ignored: list[str]) -> None:
        self.message = msg
        self.violations = violations
        self.ignored = ignored


class Decoder:
    """Turns a JSON object into one request message. Planned once, then reused for every call."""

    def __init__(self, desc: descriptor.Descriptor) -> None:
        self.descriptor = desc
        self.message_class = message_factory.GetMessageClass(desc)
        self.plan = MessagePlan(desc)
        self._converters: dict[str, Convert] | None = None
        self.context_field: descriptor.FieldDescriptor | None = None
        for field in desc.fields:
            if is_message(field, SPIFF_CONTEXT):
                self.context_field = field

    @property
    def converters(self) -> dict[str, Convert]:
        # Built on first use, so recursive message types do not recurse while planning.
        if self._converters is None:
            self._converters = {
                f.name: _field_converter(f) for f in self.descriptor.fields if f is not self.context_field
            }
        return self._converters

    def decode(self, body: dict[str, Any]) -> DecodeResult:
        """Decodes spiff's request body. ``spiff__*`` keys go to the SpiffContext field, if any;
        ``proxy__*`` keys (the proxy's own, read by the shim) are never parameters either."""
        violations: list[Violation] = []
        ignored: list[str] = []
        params = {k: v for k, v in body.items() if not k.startswith(_RESERVED_PREFIXES)}
        try:
            msg = self.decode_into(params, "", violations, ignored)
        except RecursionError:
            return DecodeResult(None, [Violation("(body)", "is nested too deeply")], ignored)
        # A field whose value (or part of it) was refused is not also reported as missing.
        refused = [v.field for v in violations]
        found = [*self.plan.missing(msg), *self.plan.out_of_bounds(msg)]
        violations.extend(v for v in found if not any(_related(v.field, r) for r in refused))
        if self.context_field is not None and not violations:
            try:
                getattr(msg, self.context_field.name).CopyFrom(self._spiff_context(body))
            except _Bad as exc:
                violations.append(Violation("spiff__task_data", str(exc)))
        return DecodeResult(None if violations else msg, violations, ignored)

    def decode_into(
        self, value: dict[str, Any], prefix: str, bad: list[Violation], ignored: list[str] | None
    ) -> message.Message:
        converters = self.converters
        kwargs: dict[str, Any] = {}
        for key, item in value.items():
            convert = converters.get(key)
            if convert is None:
                if ignored is None:
                    bad.append(Violation(prefix + key, "is not a known field"))
                else:
                    ignored.append(prefix + key)
                continue
            if item is None:
                continue
            try:
                kwargs[key] = convert(item, prefix + key, bad)
            except _Bad as exc:
                bad.append(Violation(prefix + key, str(exc)))
        try:
            return self.message_class(**kwargs)
        except (TypeError, ValueError, message.Error) as exc:  # Error: nested deeper than protobuf allows
            bad.append(Violation(prefix.rstrip(".") or "(body)", f"cannot be built: {exc}"))
            return self.message_class()

    def _spiff_context(self, body: dict[str, Any]) -> message.Message:
        assert self.context_field is not None  # noqa: S101 - checked by the caller
        context: Any = message_factory.GetMessageClass(message_type(self.context_field))()
        instance_id = body.get("spiff__process_instance_id")
        low, high = INT_RANGES[FD.TYPE_INT64]
        if isinstance(instance_id, int) and not isinstance(instance_id, bool) and low <= instance_id <= high:
            context.process_instance_id = instance_id
        for key in ("process_model_identifier", "task_id", "callback_url"):
            text = body.get(f"spiff__{key}")
            if isinstance(text, str):
                setattr(context, key, text)
        if "spiff__task_data" in body:
            try:
                context.task_data.json = json_values.dumps(body["spiff__task_data"])
            except ValueError as exc:
                msg = f"cannot be carried as JSON: {exc}"
                raise _Bad(msg) from None
        result: message.Message = context
        return result


def _related(path: str, other: str) -> bool:
    """Whether two field paths are the same, or one lies inside the other (``a`` and ``a[1].b``)."""
    short, long = sorted((path, other), key=len)
    return long == short or long.startswith((short + ".", short + "["))


Encode = Callable[[message.Message], Any]
_MESSAGE_ENCODERS: dict[str, list[tuple[str, Encode]]] = {}


def encode_message(msg: message.Message) -> dict[str, Any]:
    """A message as JSON-ready Python: every field present (unset ones as null), int64 as numbers."""
    desc: Any = msg.DESCRIPTOR
    return {name: encode(msg) for name, encode in _message_encoder(desc)}


def _message_encoder(desc: descriptor.Descriptor) -> list[tuple[str, Encode]]:
    """The field encoders of a message type, planned once (recursive types plan lazily)."""
    plan = _MESSAGE_ENCODERS.get(desc.full_name)
    if plan is None:
        plan = _MESSAGE_ENCODERS[desc.full_name] = []
        plan.extend((field.name, _field_encoder(field)) for field in desc.fields)
    return plan


def _field_encoder(field: descriptor.FieldDescriptor) -> Encode:
    name = field.name
    if is_map(field):
        encode_item = _value_encoder(message_type(field).fields_by_name["value"])
        return lambda msg: {str(k): encode_item(v) for k, v in getattr(msg, name).items()}
    encode_value = _value_encoder(field)
    if is_repeated(field):
        return lambda msg: [encode_value(v) for v in getattr(msg, name)]
    if field.has_presence:
        return lambda msg: encode_value(getattr(msg, name)) if msg.HasField(name) else None
    return lambda msg: encode_value(getattr(msg, name))


def _value_encoder(field: descriptor.FieldDescriptor) -> Callable[[Any], Any]:
    kind = field.type
    if kind == FD.TYPE_MESSAGE:
        if is_message(field, json_values.JSON_VALUE):
            return lambda value: json_values.loads(value.json) if value.json else None
        if message_type(field).full_name.startswith(_WELL_KNOWN_PREFIX):
            return lambda value: json_format.MessageToDict(value, preserving_proto_field_name=True)
        return encode_message
    if kind == FD.TYPE_ENUM:
        by_number = {v.number: v.name for v in enum_type(field).values}
        return lambda value: by_number.get(value, value)
    if kind == FD.TYPE_BYTES:
        return lambda value: base64.b64encode(value).decode()
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        return lambda value: value if math.isfinite(value) else None
    return lambda value: value


class ResultLayout:
    """Where a response message's fields go in ``command_response``.

    Without role options the whole message is the body. With them, the mapped fields fill
    body, http_status, headers and mimetype, and the others become extra keys.
    """

    def __init__(self, desc: descriptor.Descriptor) -> None:
        from spiff.connector.v1 import options_pb2

        roles = options_pb2.EnvelopeRole
        self.roles: dict[int, descriptor.FieldDescriptor] = {}
        self.extras: list[tuple[str, Encode]] = []
        for field in desc.fields:
            role = field_options(field).role
            if role == roles.ENVELOPE_ROLE_UNSPECIFIED:
                self.extras.append((field.name, _field_encoder(field)))
            else:
                self.roles[role] = field

        def encoder(role: int, absent: Any) -> Encode:
            field = self.roles.get(role)
            return _field_encoder(field) if field is not None else lambda msg: absent

        self._body = encoder(roles.ENVELOPE_ROLE_BODY, None)
        self._status = encoder(roles.ENVELOPE_ROLE_HTTP_STATUS, 0)
        self._headers = encoder(roles.ENVELOPE_ROLE_HEADERS, {})
        self._mimetype = encoder(roles.ENVELOPE_ROLE_MIMETYPE, "")

    def command_response(self, msg: message.Message | None, default_status: int) -> dict[str, Any]:
        """spiff's ``command_response`` object; ``default_status`` fills an absent http_status."""
        if msg is None:
            return {
                "body": None,
                "mimetype": "application/json",
                "http_status": default_status,
                "headers": {},
            }
        if not self.roles:
            return {
                "body": encode_message(msg),
                "mimetype": "application/json",
                "http_status": default_status,
                "headers": {},
            }
        result: dict[str, Any] = {
            "body": self._body(msg),
            "mimetype": self._mimetype(msg) or "application/json",
            "http_status": self._status(msg) or default_status,
            "headers": self._headers(msg),
        }
        for name, encode in self.extras:
            result[name] = encode(msg)
        return result

"""What the protobuf descriptors say about connectors, commands and parameters.

Both the gRPC server (defaults and required checks for every caller) and the REST
shim (catalogue and transcoding) read the schema through this module, so the
custom options in ``spiff/connector/v1/options.proto`` are interpreted once.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, message
from spiff.connector.v1 import options_pb2, types_pb2

from server import json_values
from server.errors import InvalidParameters, Violation

__all__ = [
    "SPIFF_CONTEXT",
    "Bounds",
    "MessagePlan",
    "command_options",
    "connector_name",
    "connector_options",
    "enum_type",
    "field_bounds",
    "field_options",
    "message_type",
]

SPIFF_CONTEXT = types_pb2.SpiffContext.DESCRIPTOR.full_name
FD = descriptor.FieldDescriptor


# The generated stubs type extensions as plain FieldDescriptors; the Extensions mapping
# wants its own descriptor type, hence the Any.
_CONNECTOR: Any = options_pb2.connector
_COMMAND: Any = options_pb2.command
_FIELD: Any = options_pb2.field


def connector_options(service: descriptor.ServiceDescriptor) -> options_pb2.ConnectorOptions:
    options: options_pb2.ConnectorOptions = service.GetOptions().Extensions[_CONNECTOR]
    return options


def connector_name(service: descriptor.ServiceDescriptor) -> str:
    """The name used in command ids: the option, else the package segment before the version."""
    name = connector_options(service).name
    if name:
        return name
    parts = service.full_name.split(".")
    package = parts[:-1]
    if len(package) >= 2 and package[-1].startswith("v") and package[-1][1:].isdigit():
        return package[-2]
    return package[-1] if package else service.name


def command_options(method: descriptor.MethodDescriptor) -> options_pb2.CommandOptions:
    options: options_pb2.CommandOptions = method.GetOptions().Extensions[_COMMAND]
    return options


def field_options(field: descriptor.FieldDescriptor) -> options_pb2.FieldOptions:
    options: options_pb2.FieldOptions = field.GetOptions().Extensions[_FIELD]
    return options


def is_message(field: descriptor.FieldDescriptor, full_name: str) -> bool:
    return field.type == FD.TYPE_MESSAGE and message_type(field).full_name == full_name


def message_type(field: descriptor.FieldDescriptor) -> descriptor.Descriptor:
    """The message type of a message field (typed as non-optional)."""
    desc = field.message_type
    if desc is None:
        msg = f"{field.full_name} is not a message field"
        raise TypeError(msg)
    return desc


def enum_type(field: descriptor.FieldDescriptor) -> descriptor.EnumDescriptor:
    """The enum type of an enum field (typed as non-optional)."""
    desc = field.enum_type
    if desc is None:
        msg = f"{field.full_name} is not an enum field"
        raise TypeError(msg)
    return desc


def is_map(field: descriptor.FieldDescriptor) -> bool:
    return field.is_repeated and field.type == FD.TYPE_MESSAGE and message_type(field).GetOptions().map_entry


def is_repeated(field: descriptor.FieldDescriptor) -> bool:
    return bool(field.is_repeated)


@dataclass(frozen=True)
class _Default:
    field: descriptor.FieldDescriptor
    value: Any


_NUMBER_TYPES = (FD.CPPTYPE_DOUBLE, FD.CPPTYPE_FLOAT)
_INTEGER_TYPES = (FD.CPPTYPE_INT32, FD.CPPTYPE_INT64, FD.CPPTYPE_UINT32, FD.CPPTYPE_UINT64)


@dataclass(frozen=True)
class Bounds:
    """The constraints a field declares (``minimum``, ``maximum``, ``exclusive_minimum``,
    ``min_length``, ``max_length``, ``pattern``), checked on each of its values."""

    field: descriptor.FieldDescriptor
    minimum: float | None
    maximum: float | None
    exclusive_minimum: bool
    min_length: int | None
    max_length: int | None
    pattern: re.Pattern[str] | None

    def problem(self, value: Any) -> str | None:
        """What is wrong with one value, completing "<field> ...", or None."""
        if isinstance(value, str):
            if self.min_length is not None and len(value) < self.min_length:
                return f"must have at least {self.min_length} characters"
            if self.max_length is not None and len(value) > self.max_length:
                return f"must have at most {self.max_length} characters"
            if self.pattern is not None and not self.pattern.fullmatch(value):
                return f"must match {self.pattern.pattern}"
            return None
        low, high = self.minimum, self.maximum
        if isinstance(value, float) and math.isnan(value):
            return "must be a number"
        if low is not None and (value < low or (self.exclusive_minimum and value == low)):
            return f"must be greater than {_number(low)}" if self.exclusive_minimum else self._range()
        if high is not None and value > high:
            return self._range()
        return None

    def _range(self) -> str:
        if self.minimum is not None and self.maximum is not None:
            return f"must be between {_number(self.minimum)} and {_number(self.maximum)}"
        if self.minimum is not None:
            return f"must be at least {_number(self.minimum)}"
        return f"must be at most {_number(self.maximum or 0)}"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def field_bounds(field: descriptor.FieldDescriptor) -> Bounds | None:
    """The constraints ``field`` declares, or None.

    Raises:
        ValueError: when they do not fit the field (a bound on a string, a length on a number, a
            bound between integers, an exclusive minimum other than 0, a zero value they refuse on
            an optional field without presence, a pattern that does not compile).
    """
    options = field_options(field)
    numeric = [name for name in ("minimum", "maximum") if options.HasField(name)]
    textual = [name for name in ("min_length", "max_length") if options.HasField(name)]
    if options.pattern:
        textual.append("pattern")
    if options.exclusive_minimum:
        numeric.append("exclusive_minimum")
    if not numeric and not textual:
        return None
    where = f"{field.full_name}: {', '.join(numeric + textual)}"
    kind = field.cpp_type
    if numeric and kind not in (*_NUMBER_TYPES, *_INTEGER_TYPES):
        msg = f"{where} needs an integer or number field"
        raise ValueError(msg)
    if textual and field.type != FD.TYPE_STRING:
        msg = f"{where} needs a string field"
        raise ValueError(msg)
    minimum = options.minimum if options.HasField("minimum") else None
    maximum = options.maximum if options.HasField("maximum") else None
    if kind in _INTEGER_TYPES and not all(b is None or float(b).is_integer() for b in (minimum, maximum)):
        msg = f"{where} must be whole numbers on an integer field"
        raise ValueError(msg)
    if kind in _NUMBER_TYPES and (maximum is not None or minimum not in (None, 0.0)):
        # A number's text form ("2.5") is stated by a pattern, which can tell the sign only.
        msg = f"{where}: a number field supports a minimum of 0 only"
        raise ValueError(msg)
    if options.exclusive_minimum and (kind not in _NUMBER_TYPES or minimum is None):
        msg = f"{where}: exclusive_minimum needs a number field with a minimum"
        raise ValueError(msg)
    try:
        pattern = re.compile(options.pattern) if options.pattern else None
    except re.error as exc:
        msg = f"{where}: the pattern does not compile: {exc}"
        raise ValueError(msg) from None
    bounds = Bounds(
        field,
        minimum,
        maximum,
        options.exclusive_minimum,
        options.min_length if options.HasField("min_length") else None,
        options.max_length if options.HasField("max_length") else None,
        pattern,
    )
    if not field.has_presence and not is_repeated(field) and not options.required:
        zero = "" if field.type == FD.TYPE_STRING else 0
        if bounds.problem(zero) is not None:
            msg = f"{where} refuse the zero value of a field without presence: make it optional or required"
            raise ValueError(msg)
    return bounds


class MessagePlan:
    """Defaults, required-ness and declared constraints of one request message and of the
    messages nested in it (singly, in lists or as map values), computed once.

    Raises:
        ValueError: at start-up, when a default is declared on a field without presence
            or does not parse, or a constraint does not fit its field: a schema mistake
            should stop the server, not a call.
    """

    def __init__(self, desc: descriptor.Descriptor, _plans: dict[str, MessagePlan] | None = None) -> None:
        plans: dict[str, MessagePlan] = {} if _plans is None else _plans
        plans[desc.full_name] = self  # before the fields, so recursive types end here
        self.descriptor = desc
        self.required: list[descriptor.FieldDescriptor] = []
        self.defaults: list[_Default] = []
        self.nested: list[tuple[descriptor.FieldDescriptor, MessagePlan]] = []
        self.secret: list[str] = []
        self.bounds: list[Bounds] = []
        for field in desc.fields:
            options = field_options(field)
            bounds = field_bounds(field)
            if bounds is not None:
                self.bounds.append(bounds)
            if options.required:
                self.required.append(field)
            if options.secret and field.type == FD.TYPE_STRING and not is_repeated(field):
                self.secret.append(field.name)
            if options.default_json:
                self.defaults.append(_Default(field, _parse_default(field, options.default_json)))
            item = message_type(field).fields_by_name["value"] if is_map(field) else field
            if item.type == FD.TYPE_MESSAGE:
                item_type = message_type(item)
                self.nested.append((field, plans.get(item_type.full_name) or MessagePlan(item_type, plans)))
        if _plans is None:
            _keep_nested_plans_with_work(plans)

    def secret_values(self, msg: message.Message) -> tuple[str, ...]:
        """The values of the parameters declared ``secret``, to scrub from logs and messages."""
        return tuple(value for value in (getattr(msg, name) for name in self.secret) if value)

    def apply_defaults(self, msg: message.Message) -> None:
        """Sets every absent parameter that declares a default, in nested messages too."""
        for default in self.defaults:
            name = default.field.name
            if msg.HasField(name):
                continue
            if default.field.type == FD.TYPE_MESSAGE:
                getattr(msg, name).CopyFrom(default.value)
            else:
                setattr(msg, name, default.value)
        for field, plan in self.nested:
            for _, child in _children(msg, field, ""):
                plan.apply_defaults(child)

    def missing(self, msg: message.Message, prefix: str = "") -> list[Violation]:
        """The required fields that are absent (or empty, for fields without presence), by path
        (``items[2].label``); nested messages are checked where they are present."""
        found = [
            Violation(prefix + field.name, "is required")
            for field in self.required
            if not _is_present(msg, field)
        ]
        for field, plan in self.nested:
            for path, child in _children(msg, field, prefix):
                found.extend(plan.missing(child, path + "."))
        return found

    def out_of_bounds(self, msg: message.Message, prefix: str = "") -> list[Violation]:
        """The values outside their field's declared constraints, by path (``items[2].label``);
        absent fields are not checked, nor a field without presence holding its zero value."""
        found: list[Violation] = []
        for bounds in self.bounds:
            name = bounds.field.name
            value: Any = getattr(msg, name)
            if is_repeated(bounds.field):
                items = [(f"{prefix}{name}[{index}]", item) for index, item in enumerate(value)]
            elif not (msg.HasField(name) if bounds.field.has_presence else value):
                continue
            else:
                items = [(prefix + name, value)]
            for path, item in items:
                problem = bounds.problem(item)
                if problem is not None:
                    found.append(Violation(path, problem))
        for field, plan in self.nested:
            for path, child in _children(msg, field, prefix):
                found.extend(plan.out_of_bounds(child, path + "."))
        return found

    def check(self, msg: message.Message) -> None:
        """Raises InvalidParameters naming every value outside its declared constraints.

        Raises:
            InvalidParameters: some value is outside its constraints.
        """
        if not self.bounds and not self.nested:
            return
        bad = self.out_of_bounds(msg)
        if bad:
            text = "; ".join(f"{v.field} {v.description}" for v in bad)
            error = f"Invalid parameters: {text}."
            raise InvalidParameters(error, violations=bad)


def _keep_nested_plans_with_work(plans: dict[str, MessagePlan]) -> None:
    """Drops nested plans with no required field, default or constraint anywhere below them, so calls
    do not walk messages (JsonValue, Struct...) that have nothing to check."""
    busy = {name for name, plan in plans.items() if plan.required or plan.defaults or plan.bounds}
    grew = True
    while grew:
        grew = False
        for name, plan in plans.items():
            if name not in busy and any(child.descriptor.full_name in busy for _, child in plan.nested):
                busy.add(name)
                grew = True
    for plan in plans.values():
        plan.nested = [(field, child) for field, child in plan.nested if child.descriptor.full_name in busy]


def _children(msg: message.Message, field: descriptor.FieldDescriptor, prefix: str) -> list[tuple[str, Any]]:
    """The messages a message field holds, with their paths (the decoder's ``[i]``, ``['key']``)."""
    value: Any = getattr(msg, field.name)
    path = prefix + field.name
    if is_map(field):
        return [(f"{path}[{key!r}]", item) for key, item in value.items()]
    if is_repeated(field):
        return [(f"{path}[{index}]", item) for index, item in enumerate(value)]
    return [(path, value)] if msg.HasField(field.name) else []


def _is_present(msg: message.Message, field: descriptor.FieldDescriptor) -> bool:
    if is_repeated(field):
        return len(getattr(msg, field.name)) > 0
    if field.has_presence:
        return msg.HasField(field.name)
    return bool(getattr(msg, field.name))


def _parse_default(field: descriptor.FieldDescriptor, text: str) -> Any:
    where = f"{field.full_name}: default_json {text!r}"
    if not field.has_presence or is_repeated(field):
        msg = f"{where} needs a field with presence (proto3 `optional`)"
        raise ValueError(msg)
    value = json_values.loads(text)
    if is_message(field, json_values.JSON_VALUE):
        return json_values.dump(value)
    if field.type == FD.TYPE_ENUM:
        enum_value = enum_type(field).values_by_name.get(value) if isinstance(value, str) else None
        if enum_value is None:
            msg = f"{where} is not a value of {enum_type(field).full_name}"
            raise ValueError(msg)
        return enum_value.number
    expected: tuple[type, ...] = {
        FD.CPPTYPE_STRING: (str,),
        FD.CPPTYPE_BOOL: (bool,),
        FD.CPPTYPE_DOUBLE: (int, float),
        FD.CPPTYPE_FLOAT: (int, float),
    }.get(field.cpp_type, (int,))
    if not isinstance(value, expected) or (isinstance(value, bool) and bool not in expected):
        msg = f"{where} does not fit the field's type"
        raise ValueError(msg)
    return value

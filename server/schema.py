"""What the protobuf descriptors say about connectors, commands and parameters.

Both the gRPC server (defaults and required checks for every caller) and the REST
shim (catalogue and transcoding) read the schema through this module, so the
custom options in ``spiff/connector/v1/options.proto`` are interpreted once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import descriptor, message
from spiff.connector.v1 import options_pb2, types_pb2

from server import json_values
from server.errors import Violation

__all__ = [
    "SPIFF_CONTEXT",
    "MessagePlan",
    "command_options",
    "connector_name",
    "connector_options",
    "enum_type",
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


class MessagePlan:
    """Defaults and required-ness of one request message and of the messages nested in it
    (singly, in lists or as map values), computed once.

    Raises:
        ValueError: at start-up, when a default is declared on a field without presence
            or does not parse: a schema mistake should stop the server, not a call.
    """

    def __init__(self, desc: descriptor.Descriptor, _plans: dict[str, MessagePlan] | None = None) -> None:
        plans: dict[str, MessagePlan] = {} if _plans is None else _plans
        plans[desc.full_name] = self  # before the fields, so recursive types end here
        self.descriptor = desc
        self.required: list[descriptor.FieldDescriptor] = []
        self.defaults: list[_Default] = []
        self.nested: list[tuple[descriptor.FieldDescriptor, MessagePlan]] = []
        self.secret: list[str] = []
        for field in desc.fields:
            options = field_options(field)
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


def _keep_nested_plans_with_work(plans: dict[str, MessagePlan]) -> None:
    """Drops nested plans with no required field and no default anywhere below them, so calls
    do not walk messages (JsonValue, Struct...) that have nothing to check."""
    busy = {name for name, plan in plans.items() if plan.required or plan.defaults}
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

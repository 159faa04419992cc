"""The command catalogue: built once from service descriptors, served as precomputed bytes."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor, message, message_factory

from rest_shim._schema_json import allowed_values, field_schema, spiff_type
from rest_shim._transcode import Decoder, ResultLayout
from server import json_values
from server.oauth import OAuth2Handler, handlers_of
from server.schema import (
    SPIFF_CONTEXT,
    command_options,
    connector_name,
    connector_options,
    field_options,
    is_message,
)

__all__ = ["Catalogue", "CommandSpec"]


@dataclass(frozen=True)
class CommandSpec:
    """One command as the shim sees it: ids, message classes, and how to transcode."""

    connector: str
    method: descriptor.MethodDescriptor
    request_class: type[message.Message]
    response_class: type[message.Message]
    decoder: Decoder = field(repr=False)
    layout: ResultLayout = field(repr=False)

    @property
    def id(self) -> str:
        return f"{self.connector}/{self.method.name}"

    @property
    def full_method(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def long_running(self) -> bool:
        """Declared long-running: always answered 202, its result PUT to the callback URL."""
        return command_options(self.method).long_running


class Catalogue:
    """Every command of every service, indexed by ``(connector, command)``.

    Raises:
        ValueError: two services claim the same connector name, or a name has a ``/``.
    """

    def __init__(self, services: Iterable[descriptor.ServiceDescriptor]) -> None:
        self.commands: dict[tuple[str, str], CommandSpec] = {}
        self.typeahead: CommandSpec | None = None
        # The OAuth 2.0 handlers, by id ("<connector>/<name>"): the browser flow's (rest_shim._auth_flow).
        self.oauth2: dict[str, OAuth2Handler] = {}
        commands_json: list[dict[str, Any]] = []
        auths_json: list[dict[str, Any]] = []
        owners: dict[str, str] = {}
        # Sorted by connector name, so the catalogue reads the same whether the descriptors
        # came from discovery or from reflection.
        for service in sorted(services, key=connector_name):
            name = connector_name(service)
            if "/" in name or name in owners:
                taken = f" (already used by {owners[name]})" if name in owners else ""
                msg = f"connector name {name!r} of {service.full_name} is not usable{taken}"
                raise ValueError(msg)
            owners[name] = service.full_name
            for method in service.methods:
                spec = CommandSpec(
                    connector=name,
                    method=method,
                    request_class=message_factory.GetMessageClass(method.input_type),
                    response_class=message_factory.GetMessageClass(method.output_type),
                    decoder=Decoder(method.input_type),
                    layout=ResultLayout(method.output_type),
                )
                self.commands[(name, method.name)] = spec
                if command_options(method).typeahead:
                    self._set_typeahead(spec)
                commands_json.append(_describe_command(spec))
            self.oauth2.update((handler.id, handler) for handler in handlers_of(service))
            for auth in connector_options(service).auths:
                auths_json.append(
                    {
                        "id": f"{name}/{auth.name}",
                        "parameters": [
                            {
                                "id": p.id,
                                "type": p.type or "any",
                                "required": p.required,
                                "description": p.description,
                            }
                            for p in auth.parameters
                        ],
                        "description": auth.description,
                    }
                )
        self.commands_body = json.dumps(commands_json, separators=(",", ":")).encode()
        self.auths_body = json.dumps(auths_json, separators=(",", ":")).encode()

    def _set_typeahead(self, spec: CommandSpec) -> None:
        if self.typeahead is not None:
            msg = f"both {self.typeahead.id} and {spec.id} claim the typeahead endpoint"
            raise ValueError(msg)
        missing = {"category", "prefix", "limit"} - set(spec.method.input_type.fields_by_name)
        if missing:
            msg = f"{spec.id} serves typeahead but its request lacks {', '.join(sorted(missing))}"
            raise ValueError(msg)
        self.typeahead = spec

    def find(self, connector: str, command: str) -> CommandSpec | None:
        return self.commands.get((connector, command))

    def __len__(self) -> int:
        return len(self.commands)


def _describe_command(spec: CommandSpec) -> dict[str, Any]:
    parameters = []
    for f in spec.method.input_type.fields:
        if is_message(f, SPIFF_CONTEXT):
            continue
        options = field_options(f)
        schema = field_schema(f)
        parameter: dict[str, Any] = {"id": f.name, "type": spiff_type(f), "required": options.required}
        if options.description:
            parameter["description"] = options.description
        if options.default_json:
            parameter["default"] = json_values.loads(options.default_json)
        enum = allowed_values(f)
        if enum:
            parameter["enum"] = enum
        parameter["secret"] = options.secret
        parameter["schema"] = schema
        parameters.append(parameter)
    described: dict[str, Any] = {"id": spec.id, "parameters": parameters}
    description = command_options(spec.method).description
    if description:
        described["description"] = description
    if spec.long_running:
        described["long_running"] = True
    return described

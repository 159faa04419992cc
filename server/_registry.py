"""Finds the connectors: one module per connector, one generated-servicer subclass per module."""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from google.protobuf import descriptor, message, message_factory

from server.oauth import TokenField, handlers_of, token_fields
from server.schema import MessagePlan, connector_name

__all__ = ["Command", "Connector", "discover", "load_connector"]


@dataclass(frozen=True)
class Command:
    """One rpc of a hosted connector, ready to be called."""

    connector: str
    method: descriptor.MethodDescriptor
    request_class: type[message.Message]
    response_class: type[message.Message]
    behaviour: Callable[..., Any]
    plan: MessagePlan
    # Request fields holding an OAuth 2.0 token set, refreshed before the command runs.
    tokens: tuple[TokenField, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.connector}/{self.method.name}"

    @property
    def full_method(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @functools.cached_property
    def is_async(self) -> bool:
        """``async def`` commands run on the loop; plain ``def`` ones in a worker thread."""
        return inspect.iscoroutinefunction(self.behaviour)


@dataclass(frozen=True)
class Connector:
    """A connector module's servicer and the service it implements."""

    name: str
    service: descriptor.ServiceDescriptor
    servicer: object
    commands: tuple[Command, ...]


def discover(packages: Iterable[str]) -> list[Connector]:
    """Imports every module of each package and loads its connector.

    A connector is a module, or a package whose ``__init__`` exposes the servicer class (for
    connectors large enough to split); names starting with ``_`` are private helpers, skipped.

    Raises:
        RuntimeError: a module without exactly one servicer, an rpc left unimplemented,
            or two connectors with the same name. Schema mistakes stop start-up.
    """
    connectors: list[Connector] = []
    for package_name in packages:
        package = importlib.import_module(package_name)
        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
            if info.name.startswith("_"):
                continue
            module = importlib.import_module(f"{package_name}.{info.name}")
            connectors.append(load_connector(module))
    seen: dict[str, str] = {}
    for connector in connectors:
        if connector.name in seen:
            both = f"{seen[connector.name]} and {connector.service.full_name}"
            msg = f"two services use the connector name {connector.name!r}: {both}"
            raise RuntimeError(msg)
        seen[connector.name] = connector.service.full_name
    return connectors


def _defined_in(cls: type, module: ModuleType) -> bool:
    """Defined by the connector's module, or, for a connector package, by one of its submodules."""
    return cls.__module__ == module.__name__ or (
        hasattr(module, "__path__") and cls.__module__.startswith(module.__name__ + ".")
    )


def load_connector(module: ModuleType) -> Connector:
    """Instantiates the one generated-servicer subclass that ``module`` defines."""
    found = [
        (cls, base)
        for cls in vars(module).values()
        if inspect.isclass(cls) and _defined_in(cls, module)
        for base in cls.__mro__[1:]
        if base.__module__.endswith("_pb2_grpc") and base.__name__.endswith("Servicer")
    ]
    if len(found) != 1:
        msg = f"connector module {module.__name__} must define exactly one servicer class, found {len(found)}"
        raise RuntimeError(msg)
    cls, base = found[0]
    pb2 = sys.modules[base.__module__.removesuffix("_grpc")]
    service = pb2.DESCRIPTOR.services_by_name[base.__name__.removesuffix("Servicer")]
    servicer = cls()
    name = connector_name(service)
    handlers = handlers_of(service)  # a handler declaration that could never work stops start-up
    commands = []
    for method in service.methods:
        if getattr(cls, method.name) is getattr(base, method.name):
            msg = f"{cls.__qualname__} in {module.__name__} does not implement {method.name}"
            raise RuntimeError(msg)
        commands.append(
            Command(
                connector=name,
                method=method,
                request_class=message_factory.GetMessageClass(method.input_type),
                response_class=message_factory.GetMessageClass(method.output_type),
                behaviour=getattr(servicer, method.name),
                plan=MessagePlan(method.input_type),
                tokens=token_fields(service, handlers, method.input_type),
            )
        )
    return Connector(name, service, servicer, tuple(commands))

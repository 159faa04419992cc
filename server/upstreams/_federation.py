"""Local connectors and upstream servers as one set of commands: routing, and who owns a name.

A connector name (and with it every command id ``<name>/<Command>``) belongs to one place: the
local connectors, or one upstream. At start a name offered by two places stops the process with
a message naming both; later (an upstream came up or changed its schema) the first owner keeps
it, and the newcomer's service is refused and logged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from google.protobuf import descriptor, message

from server._registry import Connector
from server.invocation import LocalInvoker, Reply
from server.json_values import iso_timestamp
from server.schema import connector_name
from server.upstreams._upstream import Upstream, UpstreamState

__all__ = ["Federation"]

logger = logging.getLogger(__name__)


def _place_name(place: Upstream | None) -> str:
    return "the local connectors" if place is None else f"upstream {place.name} ({place.config.address})"


class Federation:
    """Routes each command to the local connectors or to the upstream that offers it.

    Listeners (see :meth:`subscribe`) get the whole list of services whenever it changes.
    """

    def __init__(self, connectors: Sequence[Connector], upstreams: Sequence[Upstream]) -> None:
        self.local = LocalInvoker(connectors)
        self.upstreams = tuple(upstreams)
        self._local_services = tuple(c.service for c in connectors)
        self._owners: dict[str, Upstream | None] = {connector_name(s): None for s in self._local_services}
        self._refused: dict[str, list[str]] = {u.name: [] for u in upstreams}
        self._upstream_routes: dict[str, Upstream] = {}
        self._local_routes = set(self.local.commands)
        self._listeners: list[Callable[[Sequence[descriptor.ServiceDescriptor]], None]] = []
        self.services: tuple[descriptor.ServiceDescriptor, ...] = self._local_services
        self._starting = False
        for upstream in upstreams:
            upstream.on_schema = self._changed

    def subscribe(self, listener: Callable[[Sequence[descriptor.ServiceDescriptor]], None]) -> None:
        """Calls ``listener(services)`` after each change of the offered services."""
        self._listeners.append(listener)

    async def start(self, *, wait: float = 5.0) -> None:
        """Connects every upstream and waits (at most ``wait`` seconds) for their first discovery.

        A server that is down does not stop the start: it is retried in the background.

        Raises:
            ValueError: two places offer the same connector name.
        """
        self._starting = True
        try:
            for upstream in self.upstreams:
                await upstream.start()
            for upstream in self.upstreams:
                await upstream.first_attempt(wait)
            self._rebuild(strict=True)
        finally:
            self._starting = False
        for upstream in self.upstreams:
            if upstream.state is not UpstreamState.READY:
                logger.warning(
                    "%s is not reachable yet (%s); its commands appear when it is",
                    _place_name(upstream),
                    upstream.last_error or "no answer yet",
                )

    async def close(self, grace: float | None = None) -> None:
        for upstream in self.upstreams:
            await upstream.close(grace)

    def _changed(self, upstream: Upstream) -> None:
        if self._starting:
            return  # start() rebuilds once every upstream had its first try
        self._rebuild(strict=False)

    def _rebuild(self, *, strict: bool) -> None:
        owners: dict[str, Upstream | None] = {connector_name(s): None for s in self._local_services}
        # A name stays with its owner while the owner offers it; then the first upstream in order takes it.
        for name, place in self._owners.items():
            if place is not None and name not in owners and name in _names(place.services):
                owners[name] = place
        routes: dict[str, Upstream] = {}
        services = list(self._local_services)
        conflicts: list[str] = []
        for upstream in self.upstreams:
            refused: list[str] = []
            for service in upstream.services:
                name = connector_name(service)
                owner = owners.setdefault(name, upstream)
                if owner is not upstream:
                    refused.append(name)
                    conflict = (
                        f"the connector {name!r} ({service.full_name}) is offered by both "
                        f"{_place_name(owner)} and {_place_name(upstream)}"
                    )
                    conflicts.append(conflict)
                    if name not in self._refused[upstream.name] and not strict:
                        logger.error("%s; %s keeps it", conflict, _place_name(owner))
                    continue
                services.append(service)
                for method in service.methods:
                    routes[f"/{service.full_name}/{method.name}"] = upstream
            self._refused[upstream.name] = refused
        if strict and conflicts:
            msg = "; ".join(conflicts) + ". Each connector must be offered by one place only."
            raise ValueError(msg)
        self._owners = owners
        self._upstream_routes = routes
        self.services = tuple(services)
        for listener in self._listeners:
            listener(self.services)

    def upstream_for(self, full_method: str) -> Upstream | None:
        """The upstream serving ``full_method``, or None (local, or unknown)."""
        return self._upstream_routes.get(full_method)

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        if full_method in self._local_routes:
            return await self.local.invoke(full_method, request, timeout)
        return await self._upstream_routes[full_method].invoke(full_method, request, timeout)

    def describe(self) -> list[dict[str, Any]]:
        """Each upstream as ``GET /v1/upstreams`` shows it (no metadata: it may hold secrets)."""
        return [
            {
                "name": u.name,
                "target": u.config.address,
                "state": u.state.value,
                "last_discovery": None if u.last_discovery is None else iso_timestamp(u.last_discovery),
                "last_error": u.last_error,
                "commands": sorted(
                    f"{connector_name(s)}/{m.name}"
                    for s in u.services
                    if connector_name(s) not in self._refused[u.name]
                    for m in s.methods
                ),
                "refused": sorted(self._refused[u.name]),
            }
            for u in self.upstreams
        ]


def _names(services: Sequence[descriptor.ServiceDescriptor]) -> set[str]:
    return {connector_name(s) for s in services}

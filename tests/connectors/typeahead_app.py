"""The shim around one TypeaheadService built by a test (configured files), on either execution path."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import httpx

import connectors.typeahead
from connectors.typeahead import TypeaheadService
from rest_shim import Catalogue, create_app
from server._registry import Connector, load_connector
from server.app import create_server
from server.invocation import LocalInvoker
from tests.conftest import client_for
from tests.upstreams import upstream_to


def connector_for(servicer: TypeaheadService) -> Connector:
    """The typeahead connector as discovery builds it, but calling ``servicer``."""
    base = load_connector(connectors.typeahead)
    commands = tuple(
        dataclasses.replace(command, behaviour=getattr(servicer, command.method.name))
        for command in base.commands
    )
    return dataclasses.replace(base, servicer=servicer, commands=commands)


@contextlib.asynccontextmanager
async def serve(servicer: TypeaheadService, path: str, **app_kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the shim calling ``servicer`` in-process (``local``) or over gRPC (``remote``)."""
    connector = connector_for(servicer)
    if path == "local":
        app = create_app(Catalogue([connector.service]), LocalInvoker([connector]), **app_kwargs)
        async with client_for(app) as client:
            yield client
        return
    server, port = await create_server([connector], "127.0.0.1:0")
    try:
        async with upstream_to(f"127.0.0.1:{port}") as invoker:
            catalogue = Catalogue(invoker.services)
            async with client_for(create_app(catalogue, invoker, **app_kwargs)) as client:
                yield client
    finally:
        await server.stop(None)

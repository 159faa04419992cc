"""Shared fixtures: a real grpc.aio server on 127.0.0.1:0 and the shim through httpx's ASGI transport.

``proxy`` is parametrized over the two execution paths, so every test written against it
runs once in-process (``local``) and once over a gRPC channel to a real server (``remote``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import httpx
import pytest
from starlette.applications import Starlette

from connector_proxy._processes import close_connectors
from rest_shim import Catalogue, create_app
from server._registry import Connector, discover
from server.app import create_server
from server.invocation import LocalInvoker
from tests.upstreams import upstream_to

AppFactory = Callable[..., Starlette]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def connectors(anyio_backend: str) -> AsyncIterator[list[Connector]]:
    """Fresh servicers per test (each test has its own event loop), closed like the server closes them."""
    found = discover(["connectors"])
    try:
        yield found
    finally:
        await close_connectors(found)


@pytest.fixture
async def grpc_server(connectors: list[Connector]) -> AsyncIterator[tuple[grpc.aio.Server, str]]:
    server, port = await create_server(connectors, "127.0.0.1:0")
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
async def grpc_channel(grpc_server: tuple[grpc.aio.Server, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(grpc_server[1]) as channel:
        yield channel


@pytest.fixture(params=["local", "remote"])
async def make_app(
    request: pytest.FixtureRequest, connectors: list[Connector], anyio_backend: str
) -> AsyncIterator[AppFactory]:
    """Builds the shim (any ``create_app`` keyword may be passed) on the path under test."""
    stack = contextlib.AsyncExitStack()
    server: grpc.aio.Server | None = None
    if request.param == "local":
        catalogue = Catalogue(c.service for c in connectors)
        invoker: Any = LocalInvoker(connectors)
    else:
        server, port = await create_server(connectors, "127.0.0.1:0")
        invoker = await stack.enter_async_context(upstream_to(f"127.0.0.1:{port}"))
        catalogue = Catalogue(invoker.services)

    def factory(**kwargs: Any) -> Starlette:
        return create_app(catalogue, invoker, **kwargs)

    factory.path = request.param  # type: ignore[attr-defined]
    try:
        yield factory
    finally:
        await stack.aclose()
        if server is not None:
            await server.stop(None)


@pytest.fixture
async def proxy(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the default shim, on whichever path ``make_app`` is parametrized to."""
    async with client_for(make_app()) as client:
        yield client


async def until(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Waits, at most ``seconds``, for ``condition``, which other tasks or threads make true."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "the condition did not hold in time"
        await asyncio.sleep(0.02)


def client_for(app: Starlette) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://proxy.test")

"""A real gRPC server hosting the rich test-only connector (see tests/protos_util.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from server._registry import Connector
from server.app import create_server
from tests.protos_util import rich_connector as build_rich_connector


@pytest.fixture(scope="session")
def rich_connector(tmp_path_factory: pytest.TempPathFactory) -> Connector:
    return build_rich_connector(tmp_path_factory.mktemp("protos"))


@pytest.fixture
async def rich_server(
    rich_connector: Connector, connectors: list[Connector]
) -> AsyncIterator[tuple[grpc.aio.Server, str]]:
    server, port = await create_server([*connectors, rich_connector], "127.0.0.1:0")
    try:
        yield server, f"127.0.0.1:{port}"
    finally:
        await server.stop(None)


@pytest.fixture
async def rich_channel(rich_server: tuple[grpc.aio.Server, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(rich_server[1]) as channel:
        yield channel

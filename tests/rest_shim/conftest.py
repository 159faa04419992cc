"""The rich test-only connector, served by the shim on both paths (see tests/protos_util.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from server._registry import Connector
from tests.conftest import client_for
from tests.protos_util import AppFactory, rich_connector as build_rich_connector, shim_factory


@pytest.fixture(scope="session")
def rich_connector(tmp_path_factory: pytest.TempPathFactory) -> Connector:
    return build_rich_connector(tmp_path_factory.mktemp("protos"))


@pytest.fixture(params=["local", "remote"])
async def make_rich_app(
    request: pytest.FixtureRequest, rich_connector: Connector, anyio_backend: str
) -> AsyncIterator[AppFactory]:
    """Like ``make_app``, for the rich test-only connector."""
    async with shim_factory([rich_connector], request.param) as factory:
        yield factory


@pytest.fixture
async def rich_proxy(make_rich_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_rich_app()) as client:
        yield client

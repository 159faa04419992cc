"""``Spiff-Connector-Proxy-Api-Key`` (spec §1.0, behaviours 9-11)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from rest_shim import Catalogue, create_app
from server.invocation import LocalInvoker
from server.settings import Settings
from tests.conftest import AppFactory, client_for

pytestmark = pytest.mark.anyio

PROTECTED = [("GET", "/v1/commands"), ("GET", "/v1/auths"), ("POST", "/v1/do/example/Example")]
HEADER = "Spiff-Connector-Proxy-Api-Key"


@pytest.fixture
async def keyed(make_app: AppFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(make_app(api_key="k")) as client:
        yield client


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize(
    "headers", [{}, {HEADER: "wrong"}, {HEADER: ""}, {HEADER: "kk"}, {"Authorization": "k"}]
)
async def test_missing_or_wrong_key_is_a_401(keyed, method, path, headers):
    response = await keyed.request(method, path, json={"message": "hi"}, headers=headers)
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Unauthorized"}


@pytest.mark.parametrize(("method", "path"), PROTECTED)
@pytest.mark.parametrize("header", [HEADER, HEADER.lower(), HEADER.upper()])
async def test_right_key_is_accepted(keyed, method, path, header):
    response = await keyed.request(method, path, json={"message": "hi"}, headers={header: "k"})
    assert response.status_code == 200


async def test_unknown_command_is_still_behind_the_key(keyed):
    response = await keyed.post("/v1/do/example/Nope", json={})
    assert response.status_code == 401


@pytest.mark.parametrize("path", ["/liveness", "/v1/liveness"])
async def test_liveness_needs_no_key(keyed, path):
    response = await keyed.get(path)
    assert response.status_code == 200
    assert response.json() == {"ok": True}


async def test_without_a_configured_key_no_header_is_needed(proxy):
    for method, path in PROTECTED:
        response = await proxy.request(method, path, json={"message": "hi"})
        assert response.status_code == 200


def test_create_app_refuses_an_empty_key(connectors):
    with pytest.raises(ValueError, match="empty API key"):
        create_app(Catalogue(c.service for c in connectors), LocalInvoker(connectors), api_key="")


@pytest.mark.parametrize("value", ["", "   "])
def test_settings_refuse_an_empty_key(value):
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_API_KEY"):
        Settings.from_env({"CONNECTOR_PROXY_API_KEY": value})


def test_settings_read_the_key():
    assert Settings.from_env({"CONNECTOR_PROXY_API_KEY": "k"}).api_key == "k"
    assert Settings.from_env({}).api_key is None

"""The shim mounted under a path prefix, as behind the aggregate proxy (spec §1.9, behaviour 13)."""

from __future__ import annotations

import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.anyio


async def test_everything_is_served_under_the_prefix(make_app):
    async with client_for(make_app(path_prefix="/standard")) as client:
        commands = await client.get("/standard/v1/commands")
        auths = await client.get("/standard/v1/auths")
        done = await client.post("/standard/v1/do/example/Example", json={"message": "hi"})
        live = await client.get("/standard/liveness")
        v1_live = await client.get("/standard/v1/liveness")
        unprefixed = await client.get("/v1/commands")
        unknown = await client.post("/standard/v1/do/example/Nope", json={})
    assert commands.status_code == 200
    assert "example/Example" in {c["id"] for c in commands.json()}
    assert auths.status_code == 200
    assert isinstance(auths.json(), list)
    assert done.status_code == 200
    assert done.json()["command_response"]["body"]["message"] == "hi"
    assert live.json() == v1_live.json() == {"ok": True}
    assert unprefixed.status_code == 404
    assert unprefixed.headers["content-type"] == "application/json"
    assert unknown.status_code == 404
    assert unknown.json()["error"]["error_code"] == "command_not_found"


async def test_prefix_with_api_key(make_app):
    async with client_for(make_app(path_prefix="/standard", api_key="k")) as client:
        refused = await client.get("/standard/v1/commands")
        allowed = await client.get("/standard/v1/commands", headers={"Spiff-Connector-Proxy-Api-Key": "k"})
        live = await client.get("/standard/liveness")
    assert refused.status_code == 401
    assert allowed.status_code == 200
    assert live.status_code == 200

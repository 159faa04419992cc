"""jsonata/Evaluate as spiff-arena sees it: the proxy fronting the Node.js server
(CONNECTOR_PROXY_GRPC_TARGETS), over /v1/commands and /v1/do."""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.node.calls import ENDLESS_TAIL_RECURSION
from tests.node.conftest import TIME_LIMIT_MS, NodeServer
from tests.upstreams import proxy_fronting

pytestmark = pytest.mark.anyio


@pytest.fixture
async def proxy(jsonata_server: NodeServer, tmp_path: pathlib.Path) -> AsyncIterator[httpx.AsyncClient]:
    async with proxy_fronting(f"jsonata={jsonata_server.target}", tmp_path) as client:
        yield client


async def do(proxy: httpx.AsyncClient, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await proxy.post("/v1/do/jsonata/Evaluate", json=body)
    payload: dict[str, Any] = response.json()
    assert payload["command_response_version"] == 2
    return response.status_code, payload


async def test_the_command_is_listed_with_its_parameters(proxy):
    commands = {c["id"]: c for c in (await proxy.get("/v1/commands")).json()}
    evaluate = commands["jsonata/Evaluate"]
    assert [(p["id"], p["type"], p["required"]) for p in evaluate["parameters"]] == [
        ("expression", "str", True),
        ("input", "any", False),
        ("bindings", "any", False),
    ]
    assert evaluate["description"].startswith("Evaluates a JSONata expression")


async def test_the_body_is_the_bare_result(proxy):
    status, payload = await do(
        proxy,
        expression="$sum(lines.(price * qty)) + $shipping",
        input={"lines": [{"price": 3, "qty": 2}, {"price": 10, "qty": 1}]},
        bindings={"shipping": 4},
    )
    assert status == 200
    assert payload["error"] is None
    assert payload["command_response"]["body"] == 20
    assert payload["command_response"]["http_status"] == 200
    assert [line.split(" in ")[0] for line in payload["spiff__logs"]] == ["Evaluated the expression"]

    status, payload = await do(proxy, expression="missing")
    assert (status, payload["command_response"]["body"]) == (200, None)


@pytest.mark.slow
async def test_failures_reach_spiff_with_their_error_code_and_status(proxy):
    status, payload = await do(proxy, expression="a.(b")
    assert status == 400
    assert payload["error"]["error_code"] == "JsonataSyntaxError"
    assert "S0203 at position 4" in payload["error"]["message"]

    status, payload = await do(proxy, expression=ENDLESS_TAIL_RECURSION)
    assert status == 504
    assert payload["error"]["error_code"] == "JsonataTimeLimit"
    assert f"{TIME_LIMIT_MS} ms" in payload["error"]["message"]
    assert payload["spiff__logs"][0].startswith("Stopped the evaluation after ")


async def test_a_missing_expression_is_refused_by_the_proxy_itself(proxy):
    status, payload = await do(proxy, input={"a": 1})
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert "expression" in payload["error"]["message"]
    assert payload["spiff__logs"] == []

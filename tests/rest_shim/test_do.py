"""``POST /v1/do/{connector}/{command}``: request handling and the v2 envelope (spec §1.3, §2, §3, §8)."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.anyio

EXAMPLE = "/v1/do/example/Example"
ECHO = "/v1/do/rich/Echo"


def assert_envelope(payload: dict[str, Any], *, status: int, error_code: str | None) -> None:
    """Every /v1/do answer is a full v2 envelope with exact JSON types (behaviours 25-28, 35)."""
    assert set(payload) == {"command_response", "command_response_version", "error", "spiff__logs"}
    assert type(payload["command_response_version"]) is int
    assert payload["command_response_version"] == 2
    command_response = payload["command_response"]
    assert isinstance(command_response, dict)
    assert {"body", "mimetype", "http_status", "headers"} <= set(command_response)
    assert type(command_response["http_status"]) is int
    assert command_response["http_status"] == status
    assert isinstance(command_response["headers"], dict)
    assert isinstance(payload["spiff__logs"], list)
    assert all(isinstance(line, str) for line in payload["spiff__logs"])
    if error_code is None:
        assert payload["error"] is None
    else:
        assert set(payload["error"]) == {"error_code", "message"}
        assert payload["error"]["error_code"] == error_code
        assert isinstance(payload["error"]["message"], str)
        assert payload["error"]["message"]


async def test_success_envelope_is_exact(proxy):
    response = await proxy.post(EXAMPLE, json={"message": "hi"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "command_response": {
            "body": {
                "connector_response": "You passed the example connector: 'hi'. Have a good day!",
                "message": "hi",
            },
            "mimetype": "application/json",
            "http_status": 200,
            "headers": {},
        },
        "command_response_version": 2,
        "error": None,
        "spiff__logs": [],
    }


async def test_spiff_keys_are_stripped_without_a_log_line(proxy):
    body = {
        "message": "hi",
        "spiff__process_instance_id": 42,
        "spiff__process_model_identifier": "finance/invoices",
        "spiff__task_id": "88f9b549-5a29-483c-9f1e-10b7f534a258",
        "spiff__task_data": {"message": "from task data", "x": 1},
        "spiff__callback_url": "http://localhost:7000/v1.0/tasks/42/88f9/callback",
        "spiff__anything_new": [1, 2],
    }
    response = await proxy.post(EXAMPLE, json=body)
    assert response.status_code == 200
    payload = response.json()
    assert payload["command_response"]["body"]["message"] == "hi"
    assert payload["spiff__logs"] == []


async def test_unknown_keys_are_ignored_with_a_log_line(proxy):
    response = await proxy.post(EXAMPLE, json={"message": "hi", "stale_param": 1, "other": None})
    assert response.status_code == 200
    logs = response.json()["spiff__logs"]
    assert len(logs) == 2
    assert "'stale_param'" in logs[0]
    assert "'other'" in logs[1]
    assert all("example/Example" in line for line in logs)


@pytest.mark.parametrize(
    ("field", "sent", "received"),
    [
        ("count", "5", 5),
        ("count", " -7 ", -7),
        ("count", 5.0, 5),
        ("big", str(2**62), 2**62),
        ("flag", "true", True),
        ("flag", "False", False),
        ("flag", 1, True),
        ("name", 5, "5"),
        ("name", 2.5, "2.5"),
        ("ratio", "0.25", 0.25),
        ("ratio", 3, 3.0),
    ],
)
async def test_lossless_coercions_are_accepted(rich_proxy, field, sent, received):
    body = {"name": "ada", field: sent}
    response = await rich_proxy.post(ECHO, json=body)
    assert response.status_code == 200, response.text
    echoed = response.json()["command_response"]["body"]["request"][field]
    assert echoed == received
    assert type(echoed) is type(received)


@pytest.mark.parametrize(
    ("field", "sent"),
    [
        ("count", 5.5),
        ("count", "abc"),
        ("count", "5.0"),
        ("count", 2**31),
        ("count", -(2**31) - 1),
        ("count", True),
        ("count", {}),
        ("small", -1),
        ("big", 2**63),
        ("name", []),
        ("name", True),
        ("name", {"a": 1}),
        ("flag", "yes"),
        ("flag", 2),
        ("ratio", "nan"),
        ("ratio", "inf"),
        ("ratio", False),
        ("blob", "not base64!"),
        ("mode", "medium"),
    ],
)
async def test_lossy_coercions_are_refused(rich_proxy, field, sent):
    response = await rich_proxy.post(
        ECHO, json={"name": "ada", field: sent} if field != "name" else {field: sent}
    )
    assert response.status_code == 400, response.text
    payload = response.json()
    assert_envelope(payload, status=400, error_code="InvalidParameters")
    assert field in payload["error"]["message"]


async def test_every_bad_field_and_every_missing_required_one_is_named(rich_proxy):
    body = {
        "count": 5.5,
        "big": "abc",
        "small": 2**32,
        "retries": True,
        "mode": [],
        "flag": "maybe",
        "unknown": 1,
    }
    response = await rich_proxy.post(ECHO, json=body)
    assert response.status_code == 400
    payload = response.json()
    assert_envelope(payload, status=400, error_code="InvalidParameters")
    message = payload["error"]["message"]
    for name in ("count", "big", "small", "retries", "mode", "flag", "name"):
        assert re.search(rf"\b{name}\b", message), f"{name} not named in: {message}"
    assert "rich/Echo" in message
    assert payload["command_response"]["body"] is None
    assert any("'unknown'" in line for line in payload["spiff__logs"])


async def test_missing_required_parameter_is_a_400(proxy):
    response = await proxy.post(EXAMPLE, json={})
    assert response.status_code == 400
    payload = response.json()
    assert_envelope(payload, status=400, error_code="InvalidParameters")
    assert "message" in payload["error"]["message"]


async def test_null_is_treated_as_absent(proxy, rich_proxy):
    missing = await proxy.post(EXAMPLE, json={"message": None})
    assert missing.status_code == 400
    assert "message" in missing.json()["error"]["message"]

    defaulted = await rich_proxy.post(ECHO, json={"name": "ada", "greeting": None, "count": None})
    assert defaulted.status_code == 200
    request = defaulted.json()["command_response"]["body"]["request"]
    assert request["greeting"] == "hello"
    assert request["count"] == 0


@pytest.mark.parametrize("path", ["/v1/do/example/NoSuchCommand", "/v1/do/nosuch/Example"])
async def test_unknown_command_is_a_404_envelope(proxy, path):
    response = await proxy.post(path, json={"message": "hi"})
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    payload = response.json()
    assert_envelope(payload, status=404, error_code="command_not_found")
    assert path.removeprefix("/v1/do/") in payload["error"]["message"]


@pytest.mark.parametrize(
    "raw", [b"{", b'{"message": "hi",}', b"{'message': 'hi'}", b"NaN", b'{"a": NaN}', b"\xff\xfe{"]
)
async def test_malformed_json_is_a_400(proxy, raw):
    response = await proxy.post(EXAMPLE, content=raw, headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert_envelope(response.json(), status=400, error_code="InvalidJson")


@pytest.mark.parametrize(
    "raw", [b"1e400", b'{"message": "hi", "x": -1e999}', b"[" * 100_000 + b"]" * 100_000]
)
async def test_json_that_python_cannot_hold_is_a_400_not_a_crash(proxy, raw):
    """Numbers that overflow to infinity and nesting deeper than the parser's recursion limit."""
    response = await proxy.post(EXAMPLE, content=raw)
    assert response.status_code == 400
    assert_envelope(response.json(), status=400, error_code="InvalidJson")


@pytest.mark.parametrize("raw", [b"[]", b'[{"message": "hi"}]', b'"hi"', b"5", b"true", b"null"])
async def test_non_object_json_body_is_a_400(proxy, raw):
    response = await proxy.post(EXAMPLE, content=raw)
    assert response.status_code == 400
    payload = response.json()
    assert_envelope(payload, status=400, error_code="InvalidParameters")
    assert "object" in payload["error"]["message"]


async def test_empty_body_is_an_empty_object(proxy, rich_proxy):
    for raw in (b"", b"  \n"):
        missing = await proxy.post(EXAMPLE, content=raw)
        assert missing.status_code == 400
        assert "message" in missing.json()["error"]["message"]
        no_required = await rich_proxy.post("/v1/do/rich/Nap", content=raw)
        assert no_required.status_code == 200, no_required.text


async def test_oversize_body_with_content_length_is_a_413(make_app):
    async with client_for(make_app(max_body_bytes=1000)) as client:
        response = await client.post(EXAMPLE, json={"message": "x" * 2000})
    assert "content-length" in response.request.headers
    assert response.status_code == 413
    assert_envelope(response.json(), status=413, error_code="PayloadTooLarge")


async def test_oversize_streamed_body_without_content_length_is_a_413(make_app):
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"message": "'
        for _ in range(20):
            yield b"x" * 100
        yield b'"}'

    async with client_for(make_app(max_body_bytes=1000)) as client:
        response = await client.post(EXAMPLE, content=chunks())
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert_envelope(response.json(), status=413, error_code="PayloadTooLarge")


async def test_body_at_the_limit_is_accepted_streamed_or_not(make_app):
    body = json.dumps({"message": "x" * 900}).encode()
    assert len(body) <= 1000

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:500]
        yield body[500:]

    async with client_for(make_app(max_body_bytes=len(body))) as client:
        plain = await client.post(EXAMPLE, content=body)
        streamed = await client.post(EXAMPLE, content=chunks())
    assert plain.status_code == 200
    assert streamed.status_code == 200


async def test_large_task_data_is_accepted(proxy):
    task_data = {f"key{i}": "v" * 1000 for i in range(5000)}  # about 5 MB
    response = await proxy.post(EXAMPLE, json={"message": "big", "spiff__task_data": task_data})
    assert response.status_code == 200
    assert response.json()["command_response"]["body"]["message"] == "big"


async def test_get_on_do_is_a_405_in_json(proxy):
    response = await proxy.get(EXAMPLE)
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["error_code"] == "MethodNotAllowed"
    assert "POST" in response.headers["allow"]


@pytest.mark.parametrize("path", ["/", "/nope", "/v1/do", "/v1/do/example", "/v1/do/a/b/c", "/v2/commands"])
async def test_unknown_route_is_a_404_in_json(proxy, path):
    response = await proxy.post(path) if path.startswith("/v1/do") else await proxy.get(path)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert "<html" not in response.text.lower()
    assert response.json()["error"]["error_code"] == "NotFound"


@pytest.mark.parametrize("path", ["/liveness", "/v1/liveness"])
async def test_liveness(proxy, path):
    response = await proxy.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"ok": True}


async def test_every_do_answer_has_exact_envelope_types(proxy, make_app):
    """A tour of the answers: success, invalid, not found, bad JSON, too large."""
    answers = [
        (await proxy.post(EXAMPLE, json={"message": "hi"}), 200, None),
        (await proxy.post(EXAMPLE, json={"message": []}), 400, "InvalidParameters"),
        (await proxy.post("/v1/do/example/Nope", json={}), 404, "command_not_found"),
        (await proxy.post(EXAMPLE, content=b"{"), 400, "InvalidJson"),
    ]
    async with client_for(make_app(max_body_bytes=10)) as small:
        answers.append((await small.post(EXAMPLE, json={"message": "hello world"}), 413, "PayloadTooLarge"))
    for response, status, error_code in answers:
        assert response.status_code == status
        assert_envelope(response.json(), status=status, error_code=error_code)


async def test_a_client_leaving_mid_body_is_not_an_error(make_app, caplog):
    app = make_app()
    sent = []
    messages = iter(
        [
            {"type": "http.request", "body": b'{"message": ', "more_body": True},
            {"type": "http.disconnect"},
        ]
    )

    async def receive():
        return next(messages)

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": EXAMPLE,
        "raw_path": EXAMPLE.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json")],
        "server": ("proxy.test", 80),
        "client": ("127.0.0.1", 1),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 499
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

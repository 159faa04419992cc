"""Logs: plain or JSON lines, each with the request id of its call; one access line per answer;
the request id carried from a REST call to the upstream gRPC server, the job and its callback."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest

from connector_proxy._logging import AccessLog, JsonFormatter, RequestIdFilter, access_log_for
from rest_shim import Catalogue, create_app
from server import correlation
from server.app import create_server
from server.settings import Settings
from tests.conftest import client_for
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import process, stop, wait_for_grpc, wait_for_http
from tests.upstreams import upstream_to

pytestmark = pytest.mark.anyio

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as a JSON object (failing on any line that is not one)."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def captured(caplog: pytest.LogCaptureFixture) -> Iterator[io.StringIO]:
    """What the root logger writes at DEBUG and above, as JSON lines, while the test runs."""
    caplog.set_level(logging.DEBUG)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter())
    logging.getLogger().addHandler(handler)
    try:
        yield stream
    finally:
        logging.getLogger().removeHandler(handler)


def test_json_lines_have_the_documented_fields(captured):
    log = logging.getLogger("tests.logging")
    with correlation.bound("task-7"):
        log.info("sent %s", "it", extra={"command": "http/GetRequestV2", "status": 404, "error_code": "E"})
        try:
            raise ValueError("broken")  # noqa: EM101
        except ValueError:
            log.exception("failed")
    log.warning("outside a call")
    sent, failed, outside = json_lines(captured.getvalue())
    assert ISO_UTC.fullmatch(sent.pop("time"))
    assert sent == {
        "level": "INFO",
        "logger": "tests.logging",
        "message": "sent it",
        "request_id": "task-7",
        "command": "http/GetRequestV2",
        "status": 404,
        "error_code": "E",
    }
    assert failed["level"] == "ERROR"
    assert failed["request_id"] == "task-7"
    assert "ValueError: broken" in failed["exception"]
    assert "request_id" not in outside
    assert outside["message"] == "outside a call"


def test_plain_lines_name_the_request_id_when_there_is_one():
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(logging.Formatter("%(name)s%(request_tag)s: %(message)s"))
    log = logging.getLogger("tests.logging.plain")
    log.addHandler(handler)
    log.propagate = False
    try:
        with correlation.bound("task-8"):
            log.warning("inside")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
        log.propagate = True
    assert stream.getvalue().splitlines() == [
        "tests.logging.plain [task-8]: inside",
        "tests.logging.plain: outside",
    ]


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("task-42/attempt-1", True),
        ("3f2c9a1e-0b7d-4c1a-9f3e-2d4b6a8c0e1f", True),
        ("has space", False),
        ("x" * 129, False),
        ("", False),
        ("line\nbreak", False),
        ('quote"', False),
    ],
)
def test_a_callers_request_id_is_kept_only_when_it_is_safe_to_log(given, kept):
    chosen = correlation.accept_request_id(given)
    assert (chosen == given) is kept
    if not kept:
        assert GENERATED_ID.fullmatch(chosen)


def test_new_request_ids_are_distinct():
    ids = {correlation.accept_request_id(None) for _ in range(1000)}
    assert len(ids) == 1000


async def test_the_access_log_writes_its_lines_soon_and_in_batches():
    stream = io.StringIO()
    access = AccessLog(stream, json_lines=True, flush_after=0.05, batch=3)
    access("example/Example", 200, "", 0.00123, "r1")
    assert stream.getvalue() == ""  # waiting for its batch
    await anyio.sleep(0.3)
    (line,) = json_lines(stream.getvalue())
    assert ISO_UTC.fullmatch(line.pop("time"))
    assert line == {
        "level": "INFO",
        "logger": "access",
        "message": "example/Example answered 200 in 1.2 ms",
        "request_id": "r1",
        "command": "example/Example",
        "status": 200,
        "duration_ms": 1.2,
    }
    for n in range(3):
        access("http/GetRequestV2", 404, "HttpError404", 0.5, f"b{n}")
    batch = json_lines(stream.getvalue())[1:]  # written at once: the batch is full
    assert [(b["request_id"], b["error_code"]) for b in batch] == [
        (f"b{n}", "HttpError404") for n in range(3)
    ]


def test_plain_access_lines_read_like_the_other_lines():
    stream = io.StringIO()
    access = AccessLog(stream, json_lines=False)
    access("http/GetRequestV2", 504, "DeadlineExceeded", 40.0, "r2")
    access.flush()
    (line,) = stream.getvalue().splitlines()
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO access \[r2\]: "
        r"http/GetRequestV2 answered 504 DeadlineExceeded in 40000.0 ms",
        line,
    )


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, True),
        ({"CONNECTOR_PROXY_ACCESS_LOG": "false"}, False),
        ({"CONNECTOR_PROXY_LOG_LEVEL": "warning"}, False),
        ({"CONNECTOR_PROXY_LOG_LEVEL": "debug", "CONNECTOR_PROXY_LOG_FORMAT": "json"}, True),
    ],
)
def test_the_settings_choose_the_access_log(env, wanted):
    assert (access_log_for(Settings.from_env(env), io.StringIO()) is not None) is wanted


@pytest.mark.parametrize(
    "env",
    [
        {"CONNECTOR_PROXY_LOG_FORMAT": "yaml"},
        {"CONNECTOR_PROXY_LOG_LEVEL": "loud"},
        {"CONNECTOR_PROXY_ACCESS_LOG": "maybe"},
        {"CONNECTOR_PROXY_METRICS": "false", "CONNECTOR_PROXY_METRICS_PORT": "9464"},
    ],
)
def test_bad_logging_settings_refuse_to_start(env):
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_"):
        Settings.from_env(env)


async def test_every_do_answer_has_a_request_id_and_one_access_line(make_app):
    stream = io.StringIO()
    access = AccessLog(stream, json_lines=True)
    async with client_for(make_app(access_log=access)) as client:
        given = await client.post(
            "/v1/do/example/Example", json={"message": "hi"}, headers={"X-Request-Id": "t-1"}
        )
        made = await client.post("/v1/do/example/Example", json={"message": "hi"})
        unsafe = await client.post("/v1/do/example/Example", json={}, headers={"X-Request-Id": "a b"})
        unknown = await client.post("/v1/do/nothing/Here", json={})
    access.flush()
    assert given.headers["x-request-id"] == "t-1"
    assert GENERATED_ID.fullmatch(made.headers["x-request-id"])
    assert GENERATED_ID.fullmatch(unsafe.headers["x-request-id"])
    assert unsafe.status_code == 400
    lines = json_lines(stream.getvalue())
    assert [
        (line["request_id"], line["command"], line["status"], line.get("error_code")) for line in lines
    ] == [
        ("t-1", "example/Example", 200, None),
        (made.headers["x-request-id"], "example/Example", 200, None),
        (unsafe.headers["x-request-id"], "example/Example", 400, "InvalidParameters"),
        (unknown.headers["x-request-id"], "unknown", 404, "command_not_found"),
    ]
    assert all(line["duration_ms"] >= 0 for line in lines)


async def test_secrets_stay_out_of_every_new_line(make_app, captured):
    """Secret parameters, credentials in URLs and the API key reach neither the access lines nor
    any JSON log line (the http connector's own redaction tests cover its messages)."""
    access_stream = io.StringIO()
    access = AccessLog(access_stream, json_lines=True)
    closed = free_port()
    secrets = ["PASSWORD-9c1e", "QUERY-SECRET-4b2d", "URL-PASS-77aa", "API-KEY-5f0e"]
    app = make_app(access_log=access, api_key="API-KEY-5f0e")
    async with client_for(app) as client:
        headers = {"Spiff-Connector-Proxy-Api-Key": "API-KEY-5f0e", "X-Request-Id": "secret-test"}
        for params in (
            {
                "url": f"http://127.0.0.1:{closed}/?key=QUERY-SECRET-4b2d",
                "basic_auth_password": "PASSWORD-9c1e",
            },
            {"url": f"http://bob:URL-PASS-77aa@127.0.0.1:{closed}/", "attempts": 2},
        ):
            answer = await client.post("/v1/do/http/GetRequestV2", json=params, headers=headers)
            assert answer.status_code == 503, answer.text
        refused = await client.post(
            "/v1/do/example/Example", json={"message": "x"}, headers={"X-Request-Id": "k"}
        )
        assert refused.status_code == 401
    access.flush()
    text = access_stream.getvalue() + captured.getvalue()
    assert len(json_lines(access_stream.getvalue())) == 3
    assert captured.getvalue()  # lines were written (the test client's, at least)
    for secret in secrets:
        assert secret not in text


def _post(url: str, body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=20)


@pytest.mark.slow
def test_one_request_id_finds_a_jobs_whole_story(tmp_path):
    """REST call → job → command on an upstream gRPC server → callback: every JSON line of both
    processes about it carries the caller's request id, and the callback sends it on."""
    api_key, callback_key = "front-key-1d9e", "callback-key-0c4f"
    upstream_port, front_port, front_grpc = free_port(), free_port(), free_port()
    json_logs = {"CONNECTOR_PROXY_LOG_FORMAT": "json", "CONNECTOR_PROXY_HOST": "127.0.0.1"}
    upstream_log, front_log = tmp_path / "upstream.log", tmp_path / "front.log"
    with FakeSpiff() as spiff:
        upstream_env = {**json_logs, "CONNECTOR_PROXY_GRPC_PORT": str(upstream_port)}
        front_env = {
            **json_logs,
            "CONNECTOR_PROXY_PORT": str(front_port),
            "CONNECTOR_PROXY_GRPC_PORT": str(front_grpc),
            "CONNECTOR_PROXY_API_KEY": api_key,
            # The front hosts other connectors: example/Delay is the upstream's.
            "CONNECTOR_PROXY_CONNECTORS": "tests.conformance_connectors",
            "CONNECTOR_PROXY_GRPC_TARGETS": f"127.0.0.1:{upstream_port}",
            "CONNECTOR_PROXY_CALLBACK_BASE_URL": spiff.url,
            "CONNECTOR_PROXY_CALLBACK_API_KEY": callback_key,
        }
        with process(["-m", "connector_proxy", "--grpc-only"], upstream_env, upstream_log) as upstream:
            wait_for_grpc(f"127.0.0.1:{upstream_port}", upstream, upstream_log)
            with process(["-m", "connector_proxy"], front_env, front_log) as front:
                wait_for_http(f"http://127.0.0.1:{front_port}", front, front_log)
                body = {
                    "seconds": 0,
                    "message": "hi",
                    "spiff__task_id": "task-9",
                    "spiff__callback_url": "http://localhost:7000/v1.0/tasks/42/task-9/callback",
                }
                headers = {"Spiff-Connector-Proxy-Api-Key": api_key, "X-Request-Id": "story-3e1f"}
                answer = _post(f"http://127.0.0.1:{front_port}/v1/do/example/Delay", body, headers)
                assert answer.status_code == 202, answer.text
                assert answer.headers["x-request-id"] == "story-3e1f"
                (callback,) = spiff.wait_for(1, timeout=20)
                time.sleep(0.5)  # the delivery's own log line, and the access log's batch
                stop(front, front_log)
            stop(upstream, upstream_log)
    assert callback.headers["x-request-id"] == "story-3e1f"
    assert callback.json()["command_response"]["body"]["message"] == "hi"
    front_lines, upstream_lines = json_lines(front_log.read_text()), json_lines(upstream_log.read_text())
    story = [line for line in front_lines if line.get("request_id") == "story-3e1f"]
    messages = " | ".join(line["message"] for line in story)
    assert any(line["logger"] == "access" and line["status"] == 202 for line in story), messages
    job_id = answer.json()["command_response"]["body"]["job_id"]
    assert f"example/Delay accepted as job {job_id}" in messages
    assert f"job {job_id} (example/Delay) started" in messages
    assert f"job {job_id} (example/Delay) delivered" in messages
    (upstream_access,) = [line for line in upstream_lines if line["logger"] == "access"]
    assert upstream_access["request_id"] == "story-3e1f"
    assert (upstream_access["command"], upstream_access["code"]) == ("example/Delay", "OK")
    everything = front_log.read_text() + upstream_log.read_text()
    assert api_key not in everything
    assert callback_key not in everything


async def test_an_upstream_server_logs_the_callers_request_id(connectors, captured):
    """A synchronous call through an upstream gRPC server: the server's access line (and so every
    line it writes for the call) carries the REST caller's request id, sent as metadata."""
    server, port = await create_server(connectors, "127.0.0.1:0", access_log=True)
    try:
        async with upstream_to(f"127.0.0.1:{port}") as upstream:
            app = create_app(Catalogue(upstream.services), upstream)
            async with client_for(app) as client:
                answer = await client.post(
                    "/v1/do/example/Example", json={"message": "hi"}, headers={"X-Request-Id": "via-grpc-1"}
                )
    finally:
        await server.stop(None)
    assert answer.status_code == 200
    (line,) = [line for line in json_lines(captured.getvalue()) if line["logger"] == "access"]
    assert (line["request_id"], line["command"], line["code"]) == ("via-grpc-1", "example/Example", "OK")


def test_access_lines_stay_json_whatever_an_upstream_calls_its_error():
    stream = io.StringIO()
    access = AccessLog(stream, json_lines=True)
    odd = 'Bad"Code\\with\nnewline, ünïcode'
    access("jsonata/Evaluate", 500, odd, 0.25, "r9")
    access("jsonata/Evaluate", 500, odd, 0.0, "r10")  # the same parts, remembered
    access.flush()
    first, second = json_lines(stream.getvalue())
    assert (first["error_code"], first["request_id"], first["duration_ms"]) == (odd, "r9", 250.0)
    assert (second["error_code"], second["request_id"], second["duration_ms"]) == (odd, "r10", 0.0)
    assert first["message"] == f"jsonata/Evaluate answered 500 {odd} in 250.0 ms"

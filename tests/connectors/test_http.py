"""The http connector against a real local HTTP server, through the shim on both execution paths."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.http.v1 import http_pb2, http_pb2_grpc

from connectors.http import HttpService
from server import errors
from server.invocation import LocalContext
from tests.conftest import client_for
from tests.connectors.commands import Commands
from tests.connectors.http_target import BASIC_PASSWORD, BASIC_USER, BIG, EDGE, JSON_TEXT, HttpTarget

pytestmark = pytest.mark.anyio

JSON_BODY = {"big": BIG, "edge": EDGE, "ratio": 0.5, "list": [1, 2, 3], "text": "héllo"}
COMMANDS = [
    (f"{verb.capitalize()}Request{version}", verb)
    for verb in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    for version in ("", "V2")
]


@pytest.fixture(scope="module")
def target():
    with HttpTarget() as server:
        yield server


call = Commands("http").call


async def echo(client: httpx.AsyncClient, command: str, **params: Any) -> dict[str, Any]:
    """The request as the target saw it (``/echo``), from a successful call."""
    status, payload = await call(client, command, **params)
    assert status == 200, payload
    body: dict[str, Any] = payload["command_response"]["body"]
    return body


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {"body": body, "mimetype": "application/json", "http_status": status, "headers": headers or {}}


def assert_logs(logs: list[str], *patterns: str) -> None:
    assert len(logs) == len(patterns), logs
    for line, pattern in zip(logs, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


async def test_get_json_keeps_integers_exact(proxy, target):
    url = target.url("/json")
    status, payload = await call(proxy, "GetRequestV2", url=url)
    assert status == 200
    logs = payload.pop("spiff__logs")
    assert payload == {"command_response": ok(JSON_BODY), "command_response_version": 2, "error": None}
    assert type(payload["command_response"]["body"]["big"]) is int
    assert payload["command_response"]["body"]["edge"] == 9007199254740993
    assert_logs(logs, re.escape(f"GET {url}"), r"-> 200 in \d+ ms")


@pytest.mark.parametrize(("command", "verb"), COMMANDS)
async def test_every_command_sends_its_method(proxy, target, command, verb):
    params = {"url": target.url("/echo"), "params": {"n": 1}}
    if verb not in ("GET", "HEAD"):
        params["data"] = {"n": 1}
    status, payload = await call(proxy, command, **params)
    assert status == 200
    response = payload["command_response"]
    assert response["http_status"] == 200
    if verb == "HEAD":
        assert response["body"] == {"raw_response": ""}
        return
    echo = response["body"]
    assert (echo["method"], echo["query"]) == (verb, [["n", "1"]])
    assert echo["body"] == ("" if verb == "GET" else '{"n":1}')


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/text", {"raw_response": "hello, world"}),
        ("/latin1", {"raw_response": "café"}),
        ("/xml", {"root": {"item": [{"@id": "1", "#text": "a"}, "b"]}}),
        ("/atom", {"root": {"item": [{"@id": "1", "#text": "a"}, "b"]}}),
    ],
)
async def test_text_and_xml_bodies(proxy, target, path, body):
    status, payload = await call(proxy, "GetRequestV2", url=target.url(path))
    assert (status, payload["command_response"], payload["error"]) == (200, ok(body), None)


@pytest.mark.parametrize(("path", "text"), [("/badjson", "{not json"), ("/nan", '{"x": NaN}')])
async def test_json_that_does_not_parse_comes_back_raw(proxy, target, path, text):
    status, payload = await call(proxy, "GetRequestV2", url=target.url(path))
    assert (status, payload["command_response"]) == (200, ok({"raw_response": text}))
    assert (
        "The application/json response body does not parse; it is returned as raw_response."
        in (payload["spiff__logs"])
    )


async def test_no_content_and_head_give_an_empty_raw_response(proxy, target):
    status, payload = await call(proxy, "DeleteRequestV2", url=target.url("/empty"))
    assert (status, payload["command_response"]) == (200, ok({"raw_response": ""}, 204))
    status, payload = await call(
        proxy, "HeadRequestV2", url=target.url("/json"), include_response_headers=True
    )
    assert status == 200
    response = payload["command_response"]
    assert response["body"] == {"raw_response": ""}
    assert response["headers"]["content-type"] == "application/json"
    assert response["headers"]["content-length"] == str(len(JSON_TEXT.encode()))


async def test_redirects_are_followed(proxy, target):
    status, payload = await call(proxy, "GetRequest", url=target.url("/redirect"))
    assert (status, payload["command_response"]) == (200, ok(JSON_BODY))


@pytest.mark.parametrize(
    ("path", "error_code", "message"),
    [
        ("/loop", "TooManyRedirects", "redirected more than 10 times"),
        ("/ftp", "InvalidRedirect", "redirected to something that is not an http(s) URL"),
    ],
)
async def test_bad_redirects_are_errors(proxy, target, path, error_code, message):
    status, payload = await call(proxy, "GetRequestV2", url=target.url(path))
    assert status == 400
    assert payload["error"] == {"error_code": error_code, "message": f"GET {target.url(path)} {message}"}


async def test_upstream_404_is_an_error_that_keeps_the_response(proxy, target):
    url = target.url("/missing")
    status, payload = await call(proxy, "GetRequestV2", url=url + "?id=7")
    assert status == 404
    logs = payload.pop("spiff__logs")
    assert payload == {
        "command_response": ok({"title": "no such item", "id": 7}, 404),
        "command_response_version": 2,
        "error": {"error_code": "HttpError404", "message": f"HTTP 404 from GET {url}"},
    }
    assert_logs(logs, re.escape(f"GET {url}"), r"-> 404 in \d+ ms")


@pytest.mark.parametrize(
    ("upstream", "outer"),
    [
        (300, 400),
        (400, 400),
        (401, 401),
        (403, 403),
        (409, 409),
        (418, 400),
        (429, 429),
        (500, 503),
        (501, 501),
        (502, 503),
        (504, 504),
    ],
)
async def test_upstream_status_maps_to_the_outer_status(proxy, target, upstream, outer):
    status, payload = await call(proxy, "PostRequestV2", url=target.url(f"/status/{upstream}"), data={})
    assert status == outer
    assert payload["error"]["error_code"] == f"HttpError{upstream}"
    assert payload["command_response"] == ok({"status": upstream}, upstream)


async def test_get_retries_5xx_until_it_succeeds(proxy, target):
    key = uuid.uuid4().hex
    url = target.url(f"/flaky/{key}")
    status, payload = await call(proxy, "GetRequestV2", url=url, params={"fail": 2}, attempts=3)
    assert (status, payload["command_response"]) == (200, ok({"hit": 3}))
    assert target.hits(key) == 3
    assert_logs(
        payload["spiff__logs"],
        re.escape(f"GET {url} (attempt 1 of 3)"),
        r"-> 503 in \d+ ms",
        re.escape("Retrying in 0.2 s."),
        re.escape(f"GET {url} (attempt 2 of 3)"),
        r"-> 503 in \d+ ms",
        re.escape("Retrying in 0.4 s."),
        re.escape(f"GET {url} (attempt 3 of 3)"),
        r"-> 200 in \d+ ms",
    )


async def test_retries_stop_after_the_last_attempt(proxy, target):
    key = uuid.uuid4().hex
    status, payload = await call(proxy, "HeadRequestV2", url=target.url(f"/flaky/{key}?fail=5"), attempts=2)
    assert (status, payload["error"]["error_code"]) == (503, "HttpError503")
    assert target.hits(key) == 2


async def test_retries_stop_when_the_timeout_leaves_no_room(proxy, target):
    key = uuid.uuid4().hex
    url = target.url(f"/flaky/{key}")
    status, payload = await call(proxy, "GetRequestV2", url=url + "?fail=5", attempts=3, timeout=0.5)
    assert (status, payload["error"]["error_code"]) == (503, "HttpError503")
    assert target.hits(key) == 2
    assert payload["spiff__logs"][-1] == "No time left for another attempt."


async def test_one_attempt_means_no_retry(proxy, target):
    key = uuid.uuid4().hex
    status, payload = await call(proxy, "GetRequestV2", url=target.url(f"/flaky/{key}?fail=1"), attempts=1)
    assert (status, payload["error"]["error_code"]) == (503, "HttpError503")
    assert payload["command_response"] == ok({"hit": 1}, 503)
    assert target.hits(key) == 1


async def test_post_is_never_retried(proxy, target):
    key = uuid.uuid4().hex
    status, payload = await call(proxy, "PostRequestV2", url=target.url(f"/flaky/{key}?fail=1"), attempts=3)
    assert (status, payload["error"]["error_code"]) == (503, "HttpError503")
    assert target.hits(key) == 1
    assert "Ignored parameter 'attempts': http/PostRequestV2 has no such parameter." in payload["spiff__logs"]


@pytest.mark.parametrize(("attempts", "used"), [(50, 10), (0, 1), (-3, 1)])
async def test_attempts_are_clamped(proxy, target, attempts, used):
    url = target.url(f"/flaky/{uuid.uuid4().hex}")
    status, payload = await call(proxy, "GetRequestV2", url=url, attempts=attempts)
    assert status == 200
    logs = payload["spiff__logs"]
    assert logs[0] == f"attempts must be between 1 and 10; using {used} instead of {attempts}."
    suffix = f" (attempt 1 of {used})" if used > 1 else ""
    assert logs[1] == f"GET {url}{suffix}"


async def test_a_slow_upstream_times_out(proxy, target):
    started = time.monotonic()
    status, payload = await call(proxy, "GetRequestV2", url=target.url("/slow?seconds=2"), timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert status == 504
    assert payload["error"] == {
        "error_code": "UpstreamTimeout",
        "message": f"GET {target.url('/slow')} did not answer within 0.5 s",
    }
    assert payload["command_response"] == ok(None, 504)
    assert_logs(payload["spiff__logs"], re.escape(f"GET {target.url('/slow')}"), r"-> no answer after \d+ ms")


async def test_the_call_deadline_bounds_the_timeout(make_app, target):
    """A 30 s timeout inside a 0.6 s command deadline still ends as UpstreamTimeout, with logs."""
    async with client_for(make_app(command_timeout=0.6)) as client:
        started = time.monotonic()
        status, payload = await call(client, "GetRequestV2", url=target.url("/slow?seconds=2"), timeout=30)
    assert time.monotonic() - started < 1.5
    assert (status, payload["error"]["error_code"]) == (504, "UpstreamTimeout")
    assert len(payload["spiff__logs"]) == 2


@pytest.mark.slow
async def test_a_deadline_of_five_seconds_or_more_is_kept_exactly(make_app, target):
    """aiohttp rounds timeouts from 5 s up to a whole second unless told not to; the connector's
    timeout must still end before the command's deadline, as UpstreamTimeout with its logs."""
    async with client_for(make_app(command_timeout=5.4)) as client:
        started = time.monotonic()
        status, payload = await call(client, "GetRequestV2", url=target.url("/slow?seconds=8"), timeout=30)
    assert time.monotonic() - started < 5.4
    assert (status, payload["error"]["error_code"]) == (504, "UpstreamTimeout")


async def test_basic_auth(proxy, target):
    url = target.url("/basic")
    status, payload = await call(
        proxy, "GetRequestV2", url=url, basic_auth_username=BASIC_USER, basic_auth_password=BASIC_PASSWORD
    )
    assert (status, payload["command_response"]) == (200, ok({"authenticated": True}))
    status, payload = await call(
        proxy, "GetRequestV2", url=url, basic_auth_username=BASIC_USER, basic_auth_password="wrong"
    )
    assert (status, payload["error"]["error_code"]) == (401, "HttpError401")
    # Credentials in the URL work too.
    host = target.base_url.removeprefix("http://")
    status, payload = await call(
        proxy, "GetRequestV2", url=f"http://{BASIC_USER}:{BASIC_PASSWORD}@{host}/basic"
    )
    assert status == 200


async def test_basic_auth_needs_a_password_and_allows_an_empty_username(proxy, target):
    sent = await echo(proxy, "GetRequestV2", url=target.url("/echo"), basic_auth_username="bob")
    assert "authorization" not in sent["headers"]
    sent = await echo(proxy, "GetRequestV2", url=target.url("/echo"), basic_auth_password="pw")
    assert sent["headers"]["authorization"] == "Basic OnB3"  # base64(":pw")


async def test_json_body_sets_content_type_unless_given(proxy, target):
    data = {"big": BIG, "nested": {"a": [1, None]}, "text": "é"}
    sent = await echo(proxy, "PostRequestV2", url=target.url("/echo"), data=data)
    assert json.loads(sent["body"]) == data
    assert sent["content_types"] == ["application/json"]
    headers = {"content-TYPE": "application/vnd.api+json"}
    sent = await echo(proxy, "PutRequestV2", url=target.url("/echo"), data=data, headers=headers)
    assert sent["content_types"] == ["application/vnd.api+json"]


async def test_form_body(proxy, target):
    data = {"a": "x y&z", "n": 5, "flag": True, "many": [1, 2], "skip": None}
    sent = await echo(proxy, "PatchRequestV2", url=target.url("/echo"), data=data, body_format="form")
    assert sent["body"] == "a=x+y%26z&n=5&flag=true&many=1&many=2"
    assert sent["content_types"] == ["application/x-www-form-urlencoded"]


@pytest.mark.parametrize(("data", "body"), [("plain <text> é", "plain <text> é"), ({"k": 1}, '{"k":1}')])
async def test_raw_body(proxy, target, data, body):
    sent = await echo(proxy, "PostRequestV2", url=target.url("/echo"), data=data, body_format="raw")
    assert (sent["body"], sent["content_types"]) == (body, ["text/plain; charset=utf-8"])


@pytest.mark.parametrize(("data", "body_format"), [({"k": 1}, "none"), (None, "json")])
async def test_no_body(proxy, target, data, body_format):
    sent = await echo(proxy, "DeleteRequestV2", url=target.url("/echo"), data=data, body_format=body_format)
    assert (sent["body"], sent["content_types"]) == ("", [])


@pytest.mark.parametrize("command", ["GetRequestV2", "PostRequestV2", "PutRequestV2", "PatchRequestV2"])
async def test_no_data_sends_no_body_and_no_content_type(proxy, target, command):
    sent = await echo(proxy, command, url=target.url("/echo"))
    assert (sent["body"], sent["content_types"]) == ("", [])


async def test_query_params(proxy, target):
    params = {"q": "a b&c", "n": 5, "flag": False, "tags": ["x", "y"], "none": None, "obj": {"k": 1}}
    sent = await echo(proxy, "GetRequestV2", url=target.url("/echo?fixed=1"), params=params)
    assert sent["query"] == [
        ["fixed", "1"],
        ["q", "a b&c"],
        ["n", "5"],
        ["flag", "false"],
        ["tags", "x"],
        ["tags", "y"],
        ["obj", '{"k":1}'],
    ]


async def test_header_values_become_text(proxy, target):
    headers = {"X-Num": 5, "X-Bool": True, "X-Str": "s", "X-None": None, "User-Agent": "mine"}
    sent = (await echo(proxy, "GetRequestV2", url=target.url("/echo"), headers=headers))["headers"]
    assert (sent["x-num"], sent["x-bool"], sent["x-str"], sent["user-agent"]) == ("5", "true", "s", "mine")
    assert "x-none" not in sent


async def test_response_headers_only_on_request(proxy, target):
    status, payload = await call(proxy, "GetRequestV2", url=target.url("/headers"))
    assert (status, payload["command_response"]["headers"]) == (200, {})
    status, payload = await call(
        proxy, "GetRequestV2", url=target.url("/headers"), include_response_headers=True
    )
    headers = payload["command_response"]["headers"]
    assert (headers["x-single"], headers["x-multi"], headers["content-type"]) == (
        "one",
        "a, b",
        "application/json",
    )


async def test_connection_refused(proxy, closed_port):
    url = f"http://127.0.0.1:{closed_port}/x"
    status, payload = await call(proxy, "GetRequestV2", url=url + "?q=1", attempts=2)
    assert status == 503
    assert payload["error"]["error_code"] == "ConnectionError"
    assert payload["error"]["message"].startswith(
        f"GET {url} failed: cannot connect to 127.0.0.1:{closed_port} ("
    )
    assert payload["command_response"] == ok(None, 503)
    refused = re.escape(f"-> cannot connect to 127.0.0.1:{closed_port} (") + r".+\) after \d+ ms"
    assert_logs(
        payload["spiff__logs"],
        re.escape(f"GET {url} (attempt 1 of 2)"),
        refused,
        re.escape("Retrying in 0.2 s."),
        re.escape(f"GET {url} (attempt 2 of 2)"),
        refused,
    )


@pytest.mark.parametrize(
    ("params", "bad_field"),
    [
        ({"url": "ftp://example.com/file"}, "url"),
        ({"url": "not a url"}, "url"),
        ({"url": "/relative/path"}, "url"),
        ({"url": "http://"}, "url"),
        ({"url": "http://a..b/"}, "url"),  # an empty label: no name to look up
        ({"url": f"http://{'a' * 64}.example/"}, "url"),  # a label over 63 characters
        ({"headers": ["Accept"]}, "headers"),
        ({"headers": "Accept: text/plain"}, "headers"),
        ({"headers": {"X-Bad": "a\r\nInjected: yes"}}, "headers['X-Bad']"),
        ({"headers": {"Bad Name": "x"}}, "headers['Bad Name']"),
        ({"params": [1, 2]}, "params"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": -1}, "timeout"),
        ({"basic_auth_password": "pw", "headers": {"authorization": "Bearer t"}}, "basic_auth_password"),
        ({"basic_auth_password": "pw", "basic_auth_username": "a:b"}, "basic_auth_username"),
        ({"data": "text", "body_format": "form"}, "data"),
    ],
)
async def test_invalid_parameters(proxy, target, params, bad_field):
    status, payload = await call(proxy, "PostRequestV2", **({"url": target.url("/echo")} | params))
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert payload["error"]["message"].startswith("Invalid parameters")
    assert f": {bad_field} " in payload["error"]["message"]
    assert payload["command_response"] == ok(None, 400)


@pytest.mark.parametrize("params", [{}, {"url": "https://example.com", "body_format": "xml"}])
async def test_parameters_the_schema_rejects(proxy, params):
    status, payload = await call(proxy, "PostRequestV2", **params)
    assert (status, payload["error"]["error_code"]) == (400, "InvalidParameters")


async def test_secrets_stay_out_of_logs_and_messages(proxy, target, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    secrets = [BASIC_PASSWORD, "SECRET123", "SECRET456", "SECRET789", "URLPASS"]
    host = target.base_url.removeprefix("http://")
    calls = [
        {"url": target.url("/basic?api_key=SECRET123"), "basic_auth_password": BASIC_PASSWORD},
        {"url": target.url("/missing?api_key=SECRET123"), "params": {"token": "SECRET456"}},
        {"url": f"http://bob:URLPASS@{host}/missing", "headers": {"X-Api-Key": "SECRET789"}},
        {"url": f"http://127.0.0.1:{closed_port}/?api_key=SECRET123", "attempts": 2},
        {"url": target.url("/slow?api_key=SECRET123&seconds=1"), "timeout": 0.2},
        {
            "url": target.url("/echo"),
            "headers": {"X-Bad": "SECRET789\n"},
            "basic_auth_password": BASIC_PASSWORD,
        },
    ]
    seen = []
    for params in calls:
        _, payload = await call(proxy, "GetRequestV2", basic_auth_username=BASIC_USER, **params)
        seen.extend(payload["spiff__logs"])
        if payload["error"] is not None:
            seen.append(payload["error"]["message"])
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "GET" in text
    for secret in secrets:
        assert secret not in text


async def test_grpc_callers_get_http_errors_with_rich_status(grpc_channel, target):
    stub = http_pb2_grpc.HttpServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    ok_response = await stub.GetRequestV2(http_pb2.GetRequestV2Request(url=target.url("/json")), timeout=10)
    assert json.loads(ok_response.body.json) == JSON_BODY
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetRequestV2(http_pb2.GetRequestV2Request(url=target.url("/missing")), timeout=10)
    failure = caught.value
    assert failure.code() == grpc.StatusCode.NOT_FOUND
    assert failure.details() == f"HTTP 404 from GET {target.url('/missing')}"
    details = [value for key, value in failure.trailing_metadata() or () if key == "grpc-status-details-bin"]
    assert len(details) == 1
    assert isinstance(details[0], bytes)
    status = status_pb2.Status.FromString(details[0])
    infos, results = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(http_pb2.GetRequestV2Response.DESCRIPTOR):
            results.append(http_pb2.GetRequestV2Response())
            detail.Unpack(results[-1])
    assert [info.reason for info in infos] == ["HttpError404"]
    assert results[0].http_status == 404
    assert json.loads(results[0].body.json) == {"title": "no such item", "id": 7}


async def test_one_pool_opened_lazily_and_closed(target):
    sessions = []

    def factory():
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    service = HttpService(session_factory=factory)
    assert sessions == []
    context = LocalContext(time.monotonic() + 10)
    for _ in range(3):
        # Defaults are the server's job; without them the connector falls back to the same values.
        response = await service.GetRequestV2(http_pb2.GetRequestV2Request(url=target.url("/json")), context)
        assert (response.http_status, json.loads(response.body.json)) == (200, JSON_BODY)
    assert len(sessions) == 1
    await service.aclose()
    assert sessions[0].closed
    await service.aclose()


async def test_direct_calls_raise_command_errors_bounded_by_the_context(target):
    service = HttpService()
    try:
        started = time.monotonic()
        request = http_pb2.GetRequestV2Request(url=target.url("/slow?seconds=2"), timeout=30)
        with pytest.raises(errors.CommandError) as caught:
            await service.GetRequestV2(request, LocalContext(time.monotonic() + 0.4))
        assert time.monotonic() - started < 1
        assert (caught.value.code, caught.value.error_code) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "UpstreamTimeout",
        )
        with pytest.raises(errors.CommandError) as caught:
            await service.DeleteRequest(
                http_pb2.DeleteRequestRequest(url=target.url("/status/409")),
                LocalContext(time.monotonic() + 10),
            )
        assert (caught.value.code, caught.value.error_code) == (grpc.StatusCode.ABORTED, "HttpError409")
        assert isinstance(caught.value.result, http_pb2.DeleteRequestResponse)
    finally:
        await service.aclose()

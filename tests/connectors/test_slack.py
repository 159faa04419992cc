"""The slack connector against a fake Slack Web API on loopback, through the shim on both execution paths."""

from __future__ import annotations

import datetime
import email.utils
import json
import logging
import re
import time
from typing import Any

import aiohttp
import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.slack.v1 import slack_pb2, slack_pb2_grpc

from connectors.slack import SlackService
from server import errors, json_values
from server.invocation import LocalContext
from tests.conftest import client_for
from tests.connectors.slack_fake import TOKEN, Canned, FakeSlack

pytestmark = pytest.mark.anyio

WRONG_TOKEN = "xoxb-9999-8888-Wr0ngS3cr3t"
BLOCKS = [
    {"type": "section", "text": {"type": "mrkdwn", "text": "Invoice *4711* was approved."}},
    {"type": "divider"},
]
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"


@pytest.fixture(scope="module")
def fake():
    with FakeSlack() as server:
        yield server


@pytest.fixture(autouse=True)
def slack(fake, monkeypatch):
    """The fake, emptied, and the environment pointing the connector at it (autouse fixtures are
    set up before ``connectors`` builds the servicers, which read the environment)."""
    fake.reset()
    monkeypatch.setenv("CONNECTOR_PROXY_SLACK_API_URL", fake.api_url)
    for name in ("CONNECTOR_PROXY_SLACK_TIMEOUT", "CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT"):
        monkeypatch.delenv(name, raising=False)
    return fake


async def call(client: httpx.AsyncClient, **params: Any) -> tuple[int, dict[str, Any]]:
    """Calls ``slack/PostMessage`` through the shim; checks the envelope's fixed parts."""
    params.setdefault("token", TOKEN)
    response = await client.post("/v1/do/slack/PostMessage", json=params)
    payload: dict[str, Any] = response.json()
    assert payload["command_response_version"] == 2
    assert isinstance(payload["spiff__logs"], list)
    assert all(isinstance(line, str) for line in payload["spiff__logs"])
    return response.status_code, payload


def assert_logs(logs: list[str], *patterns: str) -> None:
    assert len(logs) == len(patterns), logs
    for line, pattern in zip(logs, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


def posted(fake: FakeSlack) -> str:
    """The pattern of the first log line of a call to the fake."""
    return re.escape(f"POST {fake.api_url}chat.postMessage")


async def test_post_message(proxy, slack):
    status, payload = await call(proxy, channel="C0123456789", message="Invoice *4711* was approved.")
    assert status == 200
    logs = payload.pop("spiff__logs")
    body = payload["command_response"]["body"]
    assert payload == {
        "command_response": {
            "body": body,
            "mimetype": "application/json",
            "http_status": 200,
            "headers": {},
        },
        "command_response_version": 2,
        "error": None,
    }
    # Slack's reply as an object (the incumbent sent a JSON string).
    assert body == {
        "ok": True,
        "channel": "C0123456789",
        "ts": body["ts"],
        "message": {
            "type": "message",
            "user": "U0BOT00001",
            "bot_id": "B0BOT00001",
            "text": "Invoice *4711* was approved.",
            "ts": body["ts"],
        },
    }
    assert re.fullmatch(r"\d+\.\d{6}", body["ts"])
    assert_logs(logs, posted(slack) + re.escape(" (channel C0123456789)"), r"-> 200 ok in \d+ ms")
    [request] = slack.requests
    assert request.path == "/api/chat.postMessage"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.content_type == "application/json; charset=utf-8"
    assert request.payload == {"channel": "C0123456789", "text": "Invoice *4711* was approved."}


async def test_blocks_and_thread_arrive_as_slack_expects(proxy, slack):
    status, payload = await call(proxy, channel="#general", message="First")
    assert status == 200
    parent = payload["command_response"]["body"]["ts"]
    status, payload = await call(
        proxy, channel="#general", message="Approved (fallback)", blocks=BLOCKS, thread_ts=parent
    )
    assert status == 200
    body = payload["command_response"]["body"]
    assert (body["message"]["thread_ts"], body["message"]["blocks"]) == (parent, BLOCKS)
    assert payload["spiff__logs"][0].endswith(f"(channel #general, 2 blocks, thread {parent})")
    assert slack.requests[-1].payload == {
        "channel": "#general",
        "text": "Approved (fallback)",
        "blocks": BLOCKS,
        "thread_ts": parent,
    }


@pytest.mark.parametrize(
    "blocks",
    [
        pytest.param(json.dumps(BLOCKS), id="json-text"),
        pytest.param({"blocks": BLOCKS}, id="block-kit-builder"),
        pytest.param(json.dumps({"blocks": BLOCKS}), id="block-kit-builder-text"),
    ],
)
async def test_other_forms_of_blocks(proxy, slack, blocks):
    status, _ = await call(proxy, channel="C0123456789", message="m", blocks=blocks)
    assert status == 200
    assert slack.requests[-1].payload["blocks"] == BLOCKS


@pytest.mark.parametrize("blocks", [None, [], "", "  "])
async def test_no_blocks_sends_none(proxy, slack, blocks):
    status, _ = await call(proxy, channel="C0123456789", message="m", blocks=blocks, thread_ts="")
    assert status == 200
    assert slack.requests[-1].payload == {"channel": "C0123456789", "text": "m"}


async def test_a_bearer_prefix_on_the_token_is_dropped(proxy, slack):
    status, _ = await call(proxy, token=f"Bearer {TOKEN}", channel="C0123456789", message="m")
    assert status == 200
    assert slack.requests[-1].headers["authorization"] == f"Bearer {TOKEN}"


async def test_slacks_warnings_are_logged(proxy, slack):
    reply = {
        "ok": True,
        "channel": "C0123456789",
        "ts": "1.000001",
        "warning": "superfluous_charset",
        "response_metadata": {"warnings": ["superfluous_charset", "missing_blocks_fallback"]},
    }
    slack.queue(Canned(body=reply))
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert (status, payload["command_response"]["body"]) == (200, reply)
    assert payload["spiff__logs"][-1] == "Slack warns: superfluous_charset, missing_blocks_fallback"


async def test_channel_not_found_keeps_slacks_reply(proxy, slack):
    status, payload = await call(proxy, channel="C0NOSUCHONE", message="m")
    assert status == 404
    logs = payload.pop("spiff__logs")
    assert payload == {
        "command_response": {
            "body": {"ok": False, "error": "channel_not_found"},
            "mimetype": "application/json",
            "http_status": 404,
            "headers": {},
        },
        "command_response_version": 2,
        "error": {"error_code": "SlackMessageFailed", "message": "channel_not_found"},
    }
    assert_logs(
        logs,
        posted(slack) + re.escape(" (channel C0NOSUCHONE)"),
        r"-> 200 ok: false \(channel_not_found\) in \d+ ms",
    )


async def test_wrong_token_is_invalid_auth(proxy, slack):
    status, payload = await call(proxy, token=WRONG_TOKEN, channel="C0123456789", message="m")
    assert status == 401
    assert payload["error"] == {"error_code": "SlackMessageFailed", "message": "invalid_auth"}
    assert payload["command_response"]["body"] == {"ok": False, "error": "invalid_auth"}
    assert payload["command_response"]["http_status"] == 401
    assert slack.requests[-1].headers["authorization"] == f"Bearer {WRONG_TOKEN}"


async def test_slacks_detail_messages_become_the_message(proxy, slack):
    blocks = [{"type": "divider"}, {"text": "no type"}]
    status, payload = await call(proxy, channel="C0123456789", message="m", blocks=blocks)
    assert status == 400
    assert payload["error"] == {
        "error_code": "SlackMessageFailed",
        "message": "[ERROR] missing required field: type [json-pointer:/blocks/1]",
    }
    assert payload["command_response"]["body"]["error"] == "invalid_blocks"


@pytest.mark.parametrize(
    ("answer", "status", "inner"),
    [
        pytest.param(Canned(body={"ok": False, "error": "missing_scope"}), 403, 403, id="missing_scope"),
        pytest.param(Canned(body={"ok": False, "error": "not_in_channel"}), 403, 403, id="not_in_channel"),
        pytest.param(Canned(body={"ok": False, "error": "token_revoked"}), 401, 401, id="token_revoked"),
        pytest.param(Canned(body={"ok": False, "error": "rate_limited"}), 429, 429, id="rate_limited"),
        pytest.param(Canned(body={"ok": False, "error": "internal_error"}), 503, 503, id="internal_error"),
        pytest.param(Canned(body={"ok": False, "error": "msg_too_long"}), 400, 400, id="msg_too_long"),
        pytest.param(Canned(body={"ok": False, "error": "something_new"}), 400, 400, id="unknown-error"),
        pytest.param(Canned(body={"ok": False}), 400, 400, id="no-error-string"),
        pytest.param(
            Canned(status=400, body={"ok": False, "error": "invalid_arguments"}), 400, 400, id="slack-400"
        ),
        pytest.param(
            Canned(status=500, body={"ok": False, "error": "fatal_error"}), 503, 500, id="slack-500"
        ),
        pytest.param(Canned(status=503, body={"ok": True}), 503, 503, id="ok-with-5xx"),
    ],
)
async def test_slack_errors_map_to_honest_statuses(proxy, slack, answer, status, inner):
    slack.queue(answer)
    code, payload = await call(proxy, channel="C0123456789", message="m")
    assert code == status
    assert payload["error"]["error_code"] == "SlackMessageFailed"
    assert payload["command_response"]["http_status"] == inner
    assert payload["command_response"]["body"] == answer.body


async def test_rate_limited_says_retry_after(proxy, slack):
    answer = Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "30"})
    slack.queue(answer)
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert status == 429
    logs = payload.pop("spiff__logs")
    assert payload == {
        "command_response": {
            "body": {"ok": False, "error": "ratelimited"},
            "mimetype": "application/json",
            "http_status": 429,
            "headers": {"retry-after": "30"},
        },
        "command_response_version": 2,
        "error": {
            "error_code": "SlackRateLimited",
            "message": "Slack rate limited chat.postMessage: retry after 30 s.",
        },
    }
    assert_logs(logs, posted(slack) + ".*", r"-> 429 ok: false \(ratelimited\) in \d+ ms")
    assert len(slack.requests) == 1


async def test_a_short_retry_after_is_waited_out_once(proxy, slack):
    slack.queue(Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "0"}))
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert status == 200
    assert payload["command_response"]["body"]["ok"] is True
    assert len(slack.requests) == 2
    assert_logs(
        payload["spiff__logs"],
        posted(slack) + re.escape(" (channel C0123456789)"),
        r"-> 429 ok: false \(ratelimited\) in \d+ ms",
        re.escape("Rate limited: retrying once in 0 s."),
        posted(slack) + re.escape(" (channel C0123456789, attempt 2 of 2)"),
        r"-> 200 ok in \d+ ms",
    )


async def test_only_one_retry(proxy, slack):
    limited = Canned(status=429, body="slow down", content_type="text/plain", headers={"Retry-After": "0"})
    slack.queue(limited, limited)
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert status == 429
    assert payload["error"] == {
        "error_code": "SlackRateLimited",
        "message": "Slack rate limited chat.postMessage (also after one retry): retry after 0 s.",
    }
    assert payload["command_response"]["body"] == {"raw_response": "slow down"}
    assert len(slack.requests) == 2


async def test_no_retry_when_the_wait_does_not_fit_the_deadline(make_app, slack):
    slack.queue(Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "1"}))
    async with client_for(make_app(command_timeout=1.5)) as client:
        status, payload = await call(client, channel="C0123456789", message="m")
    assert (status, payload["error"]["error_code"]) == (429, "SlackRateLimited")
    assert payload["spiff__logs"][-1] == "No time left to wait out Retry-After."
    assert len(slack.requests) == 1


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(None, "no Retry-After given", id="absent"),
        pytest.param("soon", "no Retry-After given", id="garbage"),
        pytest.param("http-date", r"retry after (59|60) s", id="http-date"),
    ],
)
async def test_retry_after_forms(proxy, slack, retry_after, expected):
    if retry_after == "http-date":
        when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=60)
        retry_after = email.utils.format_datetime(when, usegmt=True)
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    slack.queue(Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers=headers))
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert status == 429
    assert re.fullmatch(f"Slack rate limited chat.postMessage: {expected}.", payload["error"]["message"])
    assert len(slack.requests) == 1


async def test_non_json_502_is_unavailable_with_the_raw_text(proxy, slack):
    slack.queue(Canned(status=502, body=HTML_502, content_type="text/html"))
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert status == 503
    logs = payload.pop("spiff__logs")
    url = f"{slack.api_url}chat.postMessage"
    assert payload == {
        "command_response": {
            "body": {"raw_response": HTML_502},
            "mimetype": "application/json",
            "http_status": 502,
            "headers": {},
        },
        "command_response_version": 2,
        "error": {
            "error_code": "SlackUnavailable",
            "message": f"POST {url} answered HTTP 502, which is not a Slack reply",
        },
    }
    assert_logs(logs, posted(slack) + ".*", r"-> 502 in \d+ ms")
    assert len(slack.requests) == 1  # a 5xx may have posted: never retried


async def test_json_5xx_that_is_not_a_slack_reply_is_unavailable(proxy, slack):
    slack.queue(Canned(status=503, body={"message": "upstream connect error"}))
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert (status, payload["error"]["error_code"]) == (503, "SlackUnavailable")
    assert payload["command_response"]["body"] == {"raw_response": '{"message": "upstream connect error"}'}


async def test_a_wrong_api_url_is_an_unexpected_response(proxy, slack):
    status, payload = await call(proxy, channel="C0123456789", message="m", api_url=f"{slack.origin}/nope")
    assert status == 400
    assert payload["error"] == {
        "error_code": "SlackUnexpectedResponse",
        "message": f"POST {slack.origin}/nope/chat.postMessage answered HTTP 404, "
        "which is not a Slack reply; is the API URL right?",
    }
    assert payload["command_response"]["http_status"] == 404
    assert "404 Not Found" in payload["command_response"]["body"]["raw_response"]


async def test_redirects_are_not_followed(proxy, slack):
    slack.queue(
        Canned(status=307, body="", content_type="text/plain", headers={"Location": "/api/chat.postMessage"})
    )
    status, payload = await call(proxy, channel="C0123456789", message="m")
    assert (status, payload["error"]["error_code"]) == (400, "SlackUnexpectedResponse")
    assert len(slack.requests) == 1  # the token went nowhere else


async def test_per_call_api_url(proxy, slack):
    status, payload = await call(proxy, channel="C0123456789", message="m", api_url=f"{slack.origin}/gov/api")
    assert status == 200
    assert payload["spiff__logs"][0].startswith(f"POST {slack.origin}/gov/api/chat.postMessage ")
    assert slack.requests[-1].path == "/gov/api/chat.postMessage"


async def test_connection_refused(proxy, closed_port):
    api_url = f"http://127.0.0.1:{closed_port}/api/"
    status, payload = await call(proxy, channel="C0123456789", message="m", api_url=api_url)
    assert status == 503
    assert payload["error"]["error_code"] == "ConnectionError"
    assert payload["error"]["message"].startswith(
        f"POST {api_url}chat.postMessage failed: cannot connect to 127.0.0.1:{closed_port} ("
    )
    assert payload["command_response"] == {
        "body": None,
        "mimetype": "application/json",
        "http_status": 503,
        "headers": {},
    }
    assert_logs(
        payload["spiff__logs"],
        re.escape(f"POST {api_url}chat.postMessage (channel C0123456789)"),
        re.escape(f"-> cannot connect to 127.0.0.1:{closed_port} (") + r".+\) after \d+ ms",
    )


async def test_the_call_deadline_bounds_the_timeout(make_app, slack):
    slack.queue(Canned(delay=2, body={"ok": True}))
    async with client_for(make_app(command_timeout=0.6)) as client:
        started = time.monotonic()
        status, payload = await call(client, channel="C0123456789", message="m")
    assert time.monotonic() - started < 1.5
    assert (status, payload["error"]["error_code"]) == (504, "UpstreamTimeout")
    assert payload["error"]["message"] == (
        f"POST {slack.api_url}chat.postMessage did not answer within 0.5 s; the message may have been posted."
    )
    assert_logs(payload["spiff__logs"], posted(slack) + ".*", r"-> no answer after \d+ ms")


@pytest.mark.parametrize(
    ("params", "bad_field"),
    [
        ({"token": "xoxb has spaces"}, "token"),
        ({"token": "xoxb-line\nbreak"}, "token"),
        ({"token": "xoxb-ünïcode"}, "token"),
        ({"blocks": "not json ["}, "blocks"),
        ({"blocks": {"type": "section"}}, "blocks"),
        ({"blocks": 5}, "blocks"),
        ({"blocks": [{"type": "divider"}, "text"]}, "blocks[1]"),
        ({"api_url": "ftp://slack.example/api/"}, "api_url"),
        ({"api_url": "slack.com/api"}, "api_url"),
        ({"api_url": "https://user:pw@slack.example/api/"}, "api_url"),
    ],
)
async def test_invalid_parameters(proxy, slack, params, bad_field):
    status, payload = await call(proxy, **({"channel": "C0123456789", "message": "m"} | params))
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert payload["error"]["message"].startswith(f"Invalid parameters: {bad_field} ")
    assert slack.requests == []


@pytest.mark.parametrize("missing", ["token", "channel", "message"])
async def test_required_parameters(proxy, slack, missing):
    params = {"token": TOKEN, "channel": "C0123456789", "message": "m"}
    del params[missing]
    response = await proxy.post("/v1/do/slack/PostMessage", json=params)
    payload = response.json()
    assert (response.status_code, payload["error"]["error_code"]) == (400, "InvalidParameters")
    assert payload["error"]["message"] == f"Invalid parameters for slack/PostMessage: {missing} is required."
    assert slack.requests == []


async def test_the_catalogue(proxy):
    commands = (await proxy.get("/v1/commands")).json()
    [command] = [c for c in commands if c["id"] == "slack/PostMessage"]
    assert [(p["id"], p["type"], p["required"]) for p in command["parameters"]] == [
        ("token", "str", True),
        ("channel", "str", True),
        ("message", "str", True),
        ("blocks", "any", False),
        ("thread_ts", "str", False),
        ("api_url", "str", False),
    ]
    assert command["parameters"][0]["secret"] is True
    assert all(p["description"] for p in command["parameters"])
    assert command["description"].startswith("Posts a message to a Slack channel")


async def test_env_http_proxy_is_honoured(proxy, slack, closed_port, monkeypatch):
    """http_proxy carries the call and no_proxy exempts hosts, as with requests (the incumbent) and
    slack_sdk."""
    for name in ("no_proxy", "NO_PROXY", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", slack.origin)
    api_url = f"http://localhost:{closed_port}/api/"
    status, _ = await call(proxy, channel="C0123456789", message="m", api_url=api_url)
    assert status == 200
    [request] = slack.requests
    assert request.target == f"{api_url}chat.postMessage"
    assert request.headers["host"] == f"localhost:{closed_port}"
    monkeypatch.setenv("no_proxy", "localhost")
    status, payload = await call(proxy, channel="C0123456789", message="m", api_url=api_url)
    assert (status, payload["error"]["error_code"]) == (503, "ConnectionError")
    assert len(slack.requests) == 1


async def test_secrets_stay_out_of_logs_and_responses(proxy, slack, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    base = {"channel": "C0123456789", "message": "m"}
    canned = (
        Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "30"}),
        Canned(status=502, body=HTML_502, content_type="text/html"),
    )
    slack.queue(*canned)
    calls: list[dict[str, Any]] = [
        {"token": TOKEN} | base,  # 429
        {"token": TOKEN} | base,  # 502
        {"token": TOKEN} | base,  # ok
        {"token": WRONG_TOKEN} | base,  # invalid_auth
        {"token": TOKEN, "channel": "C0NOSUCHONE", "message": "m"},
        {"token": TOKEN, "api_url": f"http://127.0.0.1:{closed_port}/api/"} | base,
        {"token": f"{TOKEN} {WRONG_TOKEN}"} | base,  # invalid parameter
        {"token": f"Bearer {TOKEN}", "blocks": ["x"]} | base,
    ]
    seen = []
    for params in calls:
        _, payload = await call(proxy, **params)
        seen.append(json.dumps(payload))
    # Called directly, the connector's own log lines and messages are not masked by the server.
    slack.queue(*canned)
    service = SlackService()
    try:
        for params in calls:
            request = slack_pb2.PostMessageRequest(**{k: v for k, v in params.items() if k != "blocks"})
            if "blocks" in params:
                request.blocks.CopyFrom(json_values.dump(params["blocks"]))
            try:
                await service.PostMessage(request, context())
            except errors.CommandError as exc:
                seen.append(exc.message)
    finally:
        await service.aclose()
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "chat.postMessage" in text
    for expected in ("SlackRateLimited", "SlackUnavailable", "invalid_auth", "ConnectionError"):
        assert expected in text
    for secret in (TOKEN, WRONG_TOKEN, TOKEN.split("-")[-1], WRONG_TOKEN.split("-")[-1]):
        assert secret not in text


async def test_grpc_callers_get_the_reply_and_rich_errors(grpc_channel, slack):
    stub = slack_pb2_grpc.SlackServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    reply = await stub.PostMessage(
        slack_pb2.PostMessageRequest(token=TOKEN, channel="#general", message="hi", thread_ts="1.2"),
        timeout=10,
    )
    assert reply.http_status == 200
    body = json.loads(reply.body.json)
    assert (body["ok"], body["channel"], body["message"]["thread_ts"]) == (True, "C0123456789", "1.2")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.PostMessage(
            slack_pb2.PostMessageRequest(token=WRONG_TOKEN, channel="#general", message="hi"), timeout=10
        )
    failure = caught.value
    assert (failure.code(), failure.details()) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_auth")
    details = [value for key, value in failure.trailing_metadata() or () if key == "grpc-status-details-bin"]
    assert isinstance(details[0], bytes)
    status = status_pb2.Status.FromString(details[0])
    infos, results = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
        elif detail.Is(slack_pb2.PostMessageResponse.DESCRIPTOR):
            results.append(slack_pb2.PostMessageResponse())
            detail.Unpack(results[-1])
    assert [info.reason for info in infos] == ["SlackMessageFailed"]
    assert (results[0].http_status, json.loads(results[0].body.json)) == (
        401,
        {"ok": False, "error": "invalid_auth"},
    )


def context(seconds: float = 10) -> LocalContext:
    return LocalContext(time.monotonic() + seconds)


async def test_one_pool_opened_lazily_and_closed(slack):
    sessions = []

    def factory():
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    service = SlackService(session_factory=factory)
    assert sessions == []
    request = slack_pb2.PostMessageRequest(token=TOKEN, channel="C0123456789", message="m")
    for _ in range(3):
        response = await service.PostMessage(request, context())
        assert (response.http_status, json.loads(response.body.json)["ok"]) == (200, True)
    assert len(sessions) == 1
    await service.aclose()
    assert sessions[0].closed
    await service.aclose()


async def test_constructor_arguments_win_over_the_environment(slack, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_SLACK_API_URL", "http://127.0.0.1:1/api/")
    service = SlackService(api_url=f"{slack.origin}/gov/api/", timeout=0.3, max_retry_wait=0)
    try:
        request = slack_pb2.PostMessageRequest(token=TOKEN, channel="C0123456789", message="m")
        await service.PostMessage(request, context())
        assert slack.requests[-1].path == "/gov/api/chat.postMessage"
        slack.queue(
            Canned(status=429, body={"ok": False, "error": "ratelimited"}, headers={"Retry-After": "0"})
        )
        with pytest.raises(errors.ResourceExhausted) as limited:
            await service.PostMessage(request, context())
        assert limited.value.error_code == "SlackRateLimited"  # max_retry_wait=0: no retry
        slack.queue(Canned(delay=1, body={"ok": True}))
        started = time.monotonic()
        with pytest.raises(errors.DeadlineExceeded) as timed_out:
            await service.PostMessage(request, context())
        assert time.monotonic() - started < 0.8
        assert timed_out.value.error_code == "UpstreamTimeout"
        assert "within 0.3 s" in timed_out.value.message
    finally:
        await service.aclose()


async def test_environment_configuration(slack, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_SLACK_TIMEOUT", "0.3")
    monkeypatch.setenv("CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT", "0")
    service = SlackService()
    try:
        request = slack_pb2.PostMessageRequest(token=TOKEN, channel="C0123456789", message="m")
        slack.queue(Canned(status=429, body={"ok": False}, headers={"Retry-After": "0"}), Canned(delay=1))
        with pytest.raises(errors.ResourceExhausted):
            await service.PostMessage(request, context())
        with pytest.raises(errors.DeadlineExceeded):
            await service.PostMessage(request, context())
        assert [r.path for r in slack.requests] == ["/api/chat.postMessage"] * 2
    finally:
        await service.aclose()


def test_the_default_api_url_is_slacks(monkeypatch):
    monkeypatch.delenv("CONNECTOR_PROXY_SLACK_API_URL")
    assert str(SlackService()._url) == "https://slack.com/api/chat.postMessage"
    monkeypatch.setenv("CONNECTOR_PROXY_SLACK_API_URL", "https://slack-gov.com/api")
    assert str(SlackService()._url) == "https://slack-gov.com/api/chat.postMessage"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONNECTOR_PROXY_SLACK_API_URL", "slack.com/api"),
        ("CONNECTOR_PROXY_SLACK_API_URL", "https://bot:pw@slack.com/api/"),
        ("CONNECTOR_PROXY_SLACK_TIMEOUT", "soon"),
        ("CONNECTOR_PROXY_SLACK_TIMEOUT", "0"),
        ("CONNECTOR_PROXY_SLACK_TIMEOUT", "-1"),
        ("CONNECTOR_PROXY_SLACK_MAX_RETRY_WAIT", "nan"),
    ],
)
def test_bad_configuration_stops_start_up(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=r"(?i)slack|CONNECTOR_PROXY_SLACK"):
        SlackService()

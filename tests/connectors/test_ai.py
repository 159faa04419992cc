"""The ai connector against a fake OpenAI-compatible server on loopback, through the shim on both
execution paths (in-process and over gRPC)."""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

import aiohttp
import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.ai.v1 import ai_pb2, ai_pb2_grpc

from connectors.ai import AiService
from server import errors, json_values
from server.invocation import LocalContext
from tests.conftest import client_for
from tests.connectors.commands import Commands
from tests.connectors.openai_fake import ANSWERED_MODEL, CONTEXT_CHARS, KEY, MODEL, Canned, FakeOpenAI

pytestmark = pytest.mark.anyio

COMMANDS = Commands("ai")
WRONG_KEY = "sk-proj-Wr0ngK3y9876543210zyxwSECRET"
MESSAGES = [
    {"role": "system", "content": "You sort support tickets."},
    {"role": "user", "content": "My invoice is wrong."},
]
SCHEMA = {
    "type": "object",
    "properties": {
        "category": {"type": "string", "enum": ["billing", "bug", "other"]},
        "summary": {"type": "string"},
    },
    "required": ["category", "summary"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_order",
            "description": "An order by its number",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>502 Bad Gateway</body></html>"


@pytest.fixture(scope="module")
def fake():
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def openai(fake, monkeypatch):
    """The fake, emptied, and the environment pointing the connector at it with its key (autouse
    fixtures are set up before ``connectors`` builds the servicers, which read the environment)."""
    fake.reset()
    monkeypatch.setenv("CONNECTOR_PROXY_AI_API_BASE", fake.base_url)
    monkeypatch.setenv("CONNECTOR_PROXY_AI_API_KEY", KEY)
    return fake


def posted(fake: FakeOpenAI, about: str) -> str:
    """The pattern of the first log line of a call to the fake."""
    return re.escape(f"POST {fake.base_url}/chat/completions ({about})")


def assert_logs(logs: list[str], *patterns: str) -> None:
    assert len(logs) == len(patterns), logs
    for line, pattern in zip(logs, patterns, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)


async def ask(client: Any, **params: Any) -> Any:
    params.setdefault("model", MODEL)
    params.setdefault("messages", MESSAGES)
    return await COMMANDS.ok(client, "LlmRequest", **params)


async def refused(client: Any, status: int, code: str, **params: Any) -> dict[str, Any]:
    params.setdefault("model", MODEL)
    params.setdefault("messages", MESSAGES)
    return await COMMANDS.fails(client, "LlmRequest", status, code, **params)


# --- answers ----------------------------------------------------------------------------------------


async def test_a_plain_answer_and_the_request_the_server_got(proxy, openai):
    status, payload = await COMMANDS.call(
        proxy, "LlmRequest", model=MODEL, messages=MESSAGES, temperature=0.2, max_tokens=100
    )
    assert status == 200
    logs = payload.pop("spiff__logs")
    body = payload["command_response"]["body"]
    assert payload == {
        "command_response": {"body": body, "mimetype": "application/json", "http_status": 200, "headers": {}},
        "command_response_version": 2,
        "error": None,
    }
    message = {"role": "assistant", "content": "You said: My invoice is wrong.", "refusal": None}
    assert body == {
        "content": "You said: My invoice is wrong.",
        "role": "assistant",
        "tool_calls": None,
        "parsed": None,
        "finish_reason": "stop",
        "model": ANSWERED_MODEL,
        "usage": body["usage"],
        "message": message,
        "id": body["id"],
    }
    assert set(body["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    assert body["id"].startswith("chatcmpl-")
    assert_logs(
        logs,
        posted(openai, f"model {MODEL}, 2 messages"),
        rf"-> 200 \(finish_reason stop, {body['usage']['total_tokens']} tokens\) in \d+ ms",
    )
    [request] = openai.requests
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["user-agent"] == "spiff-connector-proxy"
    assert request.payload == {"model": MODEL, "messages": MESSAGES, "temperature": 0.2, "max_tokens": 100}


async def test_text_is_one_user_message_and_extra_body_is_merged(proxy, openai):
    body = await ask(proxy, messages="Hello there", extra_body={"seed": 7, "model": "ignored", "top_p": 0.5})
    assert body["content"] == "You said: Hello there"
    assert openai.requests[-1].payload == {
        "seed": 7,
        "top_p": 0.5,
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello there"}],
    }


async def test_tool_calls(proxy, openai):
    body = await ask(proxy, tools=TOOLS, tool_choice="required")
    [call] = body["tool_calls"]
    assert call["type"] == "function"
    assert call["function"] == {
        "name": "get_order",
        "arguments": json.dumps({"query": "My invoice is wrong."}),
    }
    assert (body["content"], body["finish_reason"], body["parsed"]) == (None, "tool_calls", None)
    assert body["message"] == {"role": "assistant", "content": None, "refusal": None, "tool_calls": [call]}
    sent = openai.requests[-1].payload
    assert (sent["tools"], sent["tool_choice"]) == (TOOLS, "required")
    # The answer goes back with the tool's result: the conversation continues.
    follow_up = [*MESSAGES, body["message"], {"role": "tool", "tool_call_id": call["id"], "content": "paid"}]
    body = await ask(proxy, messages=follow_up, tools=TOOLS, tool_choice="none")
    assert body["finish_reason"] == "stop"
    assert openai.requests[-1].payload["messages"] == follow_up


async def test_an_empty_tools_list_sends_none(proxy, openai):
    status, payload = await COMMANDS.call(proxy, "LlmRequest", model=MODEL, messages=MESSAGES, tools=[])
    assert status == 200
    assert "tools" not in openai.requests[-1].payload
    assert payload["spiff__logs"][0].endswith(f"(model {MODEL}, 2 messages)")


async def test_structured_output_from_a_bare_schema_is_parsed(proxy, openai):
    status, payload = await COMMANDS.call(
        proxy, "LlmRequest", model=MODEL, messages=MESSAGES, response_format=SCHEMA
    )
    assert status == 200
    body = payload["command_response"]["body"]
    assert body["parsed"] == {"category": "billing", "summary": "My invoice is wrong."}
    assert json.loads(body["content"]) == body["parsed"]
    assert openai.requests[-1].payload["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA},
    }
    assert payload["spiff__logs"][0].endswith(f"(model {MODEL}, 2 messages, response_format json_schema)")


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        pytest.param(
            {"name": "ticket", "schema": SCHEMA, "strict": True},
            {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA, "strict": True}},
            id="json-schema-object",
        ),
        pytest.param(
            {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}},
            {"type": "json_schema", "json_schema": {"name": "ticket", "schema": SCHEMA}},
            id="whole-response-format",
        ),
    ],
)
async def test_other_forms_of_response_format(proxy, openai, given, sent):
    body = await ask(proxy, response_format=given)
    assert body["parsed"] == {"category": "billing", "summary": "My invoice is wrong."}
    assert openai.requests[-1].payload["response_format"] == sent


async def test_json_mode_is_parsed_and_text_mode_is_not(proxy, openai):
    body = await ask(proxy, response_format={"type": "json_object"})
    assert body["parsed"] == {"answer": "My invoice is wrong."}
    body = await ask(proxy, response_format={"type": "text"})
    assert (body["content"], body["parsed"]) == ("You said: My invoice is wrong.", None)


async def test_a_code_fence_around_json_is_taken_off(proxy, openai):
    openai.queue(Canned(body=completion('```json\n{"category": "bug"}\n```')))
    body = await ask(proxy, response_format=SCHEMA)
    assert body["parsed"] == {"category": "bug"}


async def test_content_that_is_not_json_is_invalid_structured_output(proxy, openai):
    openai.queue(Canned(body=completion("Sure! The category is billing.")))
    payload = await refused(proxy, 400, "AiInvalidStructuredOutput", response_format=SCHEMA)
    assert payload["error"]["message"] == f"No structured output from {MODEL}: the content is not JSON."
    body = payload["command_response"]["body"]  # the result so far comes along
    assert (body["content"], body["parsed"], body["finish_reason"]) == (
        "Sure! The category is billing.",
        None,
        "stop",
    )


async def test_json_cut_short_by_max_tokens_says_so(proxy, openai):
    payload = await refused(proxy, 400, "AiInvalidStructuredOutput", response_format=SCHEMA, max_tokens=3)
    assert payload["error"]["message"] == (
        f"No structured output from {MODEL}: the content is not JSON "
        "(cut short at max_tokens: finish_reason length)."
    )
    assert payload["command_response"]["body"]["content"] == '{"category":'  # 3 tokens of 4 characters


async def test_a_refusal_is_invalid_structured_output(proxy, openai):
    answer = completion(None)
    answer["choices"][0]["message"]["refusal"] = "I can't help with that."
    openai.queue(Canned(body=answer))
    payload = await refused(proxy, 400, "AiInvalidStructuredOutput", response_format=SCHEMA)
    assert (
        payload["error"]["message"]
        == f"No structured output from {MODEL}: the model refused: I can't help with that."
    )


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        pytest.param(Canned(body="<html>welcome</html>", content_type="text/html"), "not JSON", id="html"),
        pytest.param(Canned(body={"object": "list", "data": []}), "JSON without choices", id="no-choices"),
        pytest.param(
            Canned(body={"choices": [{"text": "legacy completion"}]}), "JSON without choices", id="no-message"
        ),
    ],
)
async def test_an_answer_that_is_not_a_chat_completion(proxy, openai, answer, kind):
    openai.queue(answer)
    payload = await refused(proxy, 400, "AiInvalidResponse")
    assert payload["error"]["message"] == (
        f"POST {openai.base_url}/chat/completions answered HTTP 200, {kind}: not a chat completion; "
        "is api_base right?"
    )


async def test_redirects_are_not_followed(proxy, openai):
    openai.queue(
        Canned(status=307, body="", content_type="text/plain", headers={"Location": "/v1/chat/completions"})
    )
    payload = await refused(proxy, 400, "AiInvalidResponse")
    assert payload["error"]["message"].endswith(
        "answered HTTP 307 (a redirect, not followed); is api_base right?"
    )
    assert len(openai.requests) == 1  # the key went nowhere else


# --- the server's errors --------------------------------------------------------------------------


async def test_a_wrong_key_is_authentication_failed_without_the_servers_words(proxy, openai):
    payload = await refused(proxy, 401, "AiAuthenticationFailed", api_key=WRONG_KEY)
    assert payload["error"]["message"] == (
        f"POST {openai.base_url}/chat/completions refused the API key (HTTP 401, invalid_api_key)."
    )
    assert payload["command_response"]["http_status"] == 401
    assert openai.requests[-1].headers["authorization"] == f"Bearer {WRONG_KEY}"
    assert_logs(
        payload["spiff__logs"],
        posted(openai, f"model {MODEL}, 2 messages"),
        r"-> 401 \(invalid_api_key\) in \d+ ms",
    )


async def test_a_403_is_authentication_failed_too(proxy, openai):
    error = {
        "message": "Project does not have access to model",
        "type": "invalid_request_error",
        "code": None,
    }
    openai.queue(Canned(status=403, body={"error": error}))
    payload = await refused(proxy, 403, "AiAuthenticationFailed")
    assert payload["error"]["message"].endswith("refused the API key (HTTP 403, invalid_request_error).")


async def test_the_configured_key_goes_only_to_the_configured_api_base(proxy, openai):
    elsewhere = openai.base_url.replace("127.0.0.1", "localhost")
    payload = await refused(proxy, 401, "AiAuthenticationFailed", api_base=elsewhere)
    assert "authorization" not in openai.requests[-1].headers
    assert (
        payload["error"]["message"] == f"POST {elsewhere}/chat/completions refused a call without an API key "
        "(HTTP 401, invalid_request_error)."
    )
    assert (
        payload["spiff__logs"][0]
        == "No API key sent: the configured key goes only to the configured API base."
    )
    # With its own key the call goes through; naming the configured base keeps the configured key.
    assert (await ask(proxy, api_base=elsewhere, api_key=KEY))["finish_reason"] == "stop"
    assert openai.requests[-1].headers["authorization"] == f"Bearer {KEY}"
    assert (await ask(proxy, api_base=openai.base_url + "/"))["finish_reason"] == "stop"
    assert openai.requests[-1].headers["authorization"] == f"Bearer {KEY}"


async def test_an_unknown_model_is_model_not_found(proxy, openai):
    payload = await refused(proxy, 404, "AiModelNotFound", model="gpt-nope")
    assert payload["error"]["message"] == (
        f"POST {openai.base_url}/chat/completions answered HTTP 404: The model `gpt-nope` does not exist "
        "or you do not have access to it. (code model_not_found)"
    )


async def test_too_long_messages_are_context_length_exceeded(proxy, openai):
    long = [{"role": "user", "content": "x" * (CONTEXT_CHARS + 1)}]
    payload = await refused(proxy, 400, "AiContextLengthExceeded", messages=long)
    assert payload["error"]["message"] == (
        f"POST {openai.base_url}/chat/completions answered HTTP 400: This model's maximum context length is "
        f"{CONTEXT_CHARS // 4} tokens. However, your messages resulted in {(CONTEXT_CHARS + 1) // 4} tokens. "
        "Please reduce the length of the messages. (code context_length_exceeded, param messages)"
    )
    assert len(openai.requests) == 1  # not retried


async def test_a_context_length_message_without_openais_code(proxy, openai):
    vllm = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens.",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    openai.queue(Canned(status=400, body=vllm))
    await refused(proxy, 400, "AiContextLengthExceeded")


async def test_other_4xx_are_invalid_request(proxy, openai):
    error = {"message": "Unrecognized request argument supplied: foo", "type": "invalid_request_error"}
    openai.queue(
        Canned(status=400, body={"error": error}), Canned(status=422, body={"detail": "bad tool schema"})
    )
    payload = await refused(proxy, 400, "AiInvalidRequest")
    assert payload["error"]["message"].endswith(
        "answered HTTP 400: Unrecognized request argument supplied: foo"
    )
    payload = await refused(proxy, 400, "AiInvalidRequest")
    assert payload["error"]["message"].endswith("answered HTTP 422: bad tool schema")
    assert len(openai.requests) == 2


# --- retries --------------------------------------------------------------------------------------


def rate_limited(retry_after: str | None = "0", code: str = "rate_limit_exceeded") -> Canned:
    error = {"message": "Rate limit reached for requests", "type": "requests", "param": None, "code": code}
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return Canned(status=429, body={"error": error}, headers=headers)


async def test_a_429_is_retried_after_retry_after(proxy, openai):
    openai.queue(rate_limited("0.2"))
    started = time.monotonic()
    status, payload = await COMMANDS.call(proxy, "LlmRequest", model=MODEL, messages=MESSAGES)
    assert status == 200
    assert time.monotonic() - started >= 0.2
    about = f"model {MODEL}, 2 messages"
    assert_logs(
        payload["spiff__logs"],
        posted(openai, about),
        r"-> 429 \(rate_limit_exceeded\) in \d+ ms",
        re.escape("Retrying in 0.2 s as the server asked."),
        posted(openai, f"{about}, attempt 2 of 3"),
        r"-> 200 \(finish_reason stop, \d+ tokens\) in \d+ ms",
    )
    assert [r.payload for r in openai.requests] == [openai.requests[0].payload] * 2


async def test_openais_retry_after_ms_wins(proxy, openai):
    limited = rate_limited("20")
    openai.queue(Canned(status=429, body=limited.body, headers={"Retry-After": "20", "retry-after-ms": "50"}))
    status, payload = await COMMANDS.call(proxy, "LlmRequest", model=MODEL, messages=MESSAGES)
    assert status == 200
    assert "Retrying in 0.05 s as the server asked." in payload["spiff__logs"]


async def test_429_on_every_attempt_is_rate_limited_with_retry_after(proxy, openai):
    openai.queue(rate_limited(), rate_limited(), rate_limited("7"))
    response = await proxy.post(
        "/v1/do/ai/LlmRequest", json={"model": MODEL, "messages": MESSAGES, "max_retries": 2}
    )
    payload = response.json()
    assert (response.status_code, payload["error"]["error_code"]) == (429, "AiRateLimited")
    assert response.headers["retry-after"] == "7"
    assert payload["error"]["message"] == (
        f"POST {openai.base_url}/chat/completions answered HTTP 429: Rate limit reached for requests "
        "(code rate_limit_exceeded) (retry after 7 s)"
    )
    assert len(openai.requests) == 3


async def test_a_retry_after_that_does_not_fit_is_not_waited(proxy, openai):
    openai.queue(rate_limited("30"))
    started = time.monotonic()
    response = await proxy.post(
        "/v1/do/ai/LlmRequest", json={"model": MODEL, "messages": MESSAGES, "timeout": 5}
    )
    assert time.monotonic() - started < 2
    payload = response.json()
    assert (response.status_code, payload["error"]["error_code"]) == (429, "AiRateLimited")
    assert response.headers["retry-after"] == "30"
    assert payload["spiff__logs"][-1] == "No time left for another attempt."
    assert len(openai.requests) == 1


async def test_insufficient_quota_is_not_retried(proxy, openai):
    openai.queue(rate_limited(None, code="insufficient_quota"))
    payload = await refused(proxy, 429, "AiQuotaExceeded")
    assert "(code insufficient_quota)" in payload["error"]["message"]
    assert len(openai.requests) == 1


async def test_a_500_is_retried_with_backoff(proxy, openai):
    openai.queue(
        Canned(status=500, body={"error": {"message": "The server had an error", "type": "server_error"}})
    )
    status, payload = await COMMANDS.call(proxy, "LlmRequest", model=MODEL, messages=MESSAGES)
    assert status == 200
    logs = payload["spiff__logs"]
    assert re.fullmatch(r"-> 500 \(server_error\) in \d+ ms", logs[1])
    wait = float(re.fullmatch(r"Retrying in ([\d.]+) s\.", logs[2]).group(1))  # type: ignore[union-attr]
    assert 0.37 <= wait <= 0.5  # 0.5 s less up to a quarter
    assert len(openai.requests) == 2


async def test_5xx_on_every_attempt_is_upstream_unavailable(proxy, openai):
    openai.queue(
        Canned(status=502, body=HTML_502, content_type="text/html"),
        Canned(status=503, body=HTML_502, content_type="text/html", headers={"Retry-After": "0"}),
    )
    payload = await refused(proxy, 503, "AiUpstreamUnavailable", max_retries=1)
    assert payload["error"]["message"] == f"POST {openai.base_url}/chat/completions answered HTTP 503"
    assert len(openai.requests) == 2


async def test_connection_refused_is_retried_then_upstream_unavailable(proxy, closed_port):
    api_base = f"http://127.0.0.1:{closed_port}/v1"
    payload = await refused(
        proxy, 503, "AiUpstreamUnavailable", api_base=api_base, api_key=KEY, max_retries=1
    )
    target = f"POST {api_base}/chat/completions"
    assert payload["error"]["message"].startswith(
        f"{target} failed: cannot connect to 127.0.0.1:{closed_port} ("
    )
    refusal = re.escape(f"-> cannot connect to 127.0.0.1:{closed_port} (") + r".+\) after \d+ ms"
    assert_logs(
        payload["spiff__logs"],
        re.escape(f"{target} (model {MODEL}, 2 messages)"),
        refusal,
        r"Retrying in 0\.\d+ s\.",
        re.escape(f"{target} (model {MODEL}, 2 messages, attempt 2 of 2)"),
        refusal,
    )


async def test_the_call_deadline_bounds_the_timeout(make_app, openai):
    openai.queue(Canned(delay=2, body=completion("late")))
    async with client_for(make_app(command_timeout=0.6)) as client:
        started = time.monotonic()
        payload = await refused(client, 504, "AiTimeout")
    assert time.monotonic() - started < 1.5
    assert (
        payload["error"]["message"] == f"POST {openai.base_url}/chat/completions did not answer within 0.5 s"
    )
    assert_logs(
        payload["spiff__logs"], posted(openai, f"model {MODEL}, 2 messages"), r"-> no answer after \d+ ms"
    )


async def test_the_timeout_parameter(proxy, openai):
    openai.queue(Canned(delay=2, body=completion("late")))
    started = time.monotonic()
    payload = await refused(proxy, 504, "AiTimeout", timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert payload["error"]["message"].endswith("did not answer within 0.3 s")


async def test_retries_stop_when_the_time_is_up(proxy, openai):
    openai.queue(Canned(status=503, body=HTML_502, content_type="text/html"))
    payload = await refused(proxy, 503, "AiUpstreamUnavailable", timeout=0.4)
    assert payload["spiff__logs"][-1] == "No time left for another attempt."
    assert len(openai.requests) == 1


async def test_the_egress_policy_applies(openai, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_EGRESS_DENY_CIDRS", "127.0.0.0/8")
    service = AiService()
    try:
        with pytest.raises(errors.EgressDenied):
            await service.LlmRequest(request(), context())
    finally:
        await service.aclose()
    assert openai.requests == []


# --- parameters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("missing", ["model", "messages"])
async def test_required_parameters(proxy, openai, missing):
    params = {"model": MODEL, "messages": MESSAGES}
    del params[missing]
    response = await proxy.post("/v1/do/ai/LlmRequest", json=params)
    payload = response.json()
    assert (response.status_code, payload["error"]["error_code"]) == (400, "InvalidParameters")
    assert payload["error"]["message"] == f"Invalid parameters for ai/LlmRequest: {missing} is required."
    assert openai.requests == []


@pytest.mark.parametrize(
    ("params", "bad_field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": {"role": "user", "content": "hi"}}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages[0]"),
        ({"messages": [MESSAGES[0], "text"]}, "messages[1]"),
        ({"tools": {"type": "function"}}, "tools"),
        ({"tools": ["get_order"]}, "tools"),
        ({"tool_choice": 3}, "tool_choice"),
        ({"response_format": "json"}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "response_format"),
        ({"extra_body": [1]}, "extra_body"),
        ({"extra_body": {"stream": True}}, "extra_body"),
        ({"temperature": 2.5}, "temperature"),
        ({"api_base": "ftp://llm.example/v1"}, "api_base"),
        ({"api_base": "llm.example/v1"}, "api_base"),
        ({"api_base": "https://user:pw@llm.example/v1"}, "api_base"),
        ({"api_base": "https://llm.example/v1?key=1"}, "api_base"),
        ({"api_base": "http://llm..example/v1"}, "api_base"),  # an empty label: no resolver takes it
        ({"api_key": "sk has spaces"}, "api_key"),
    ],
)
async def test_invalid_parameters(proxy, openai, params, bad_field):
    payload = await refused(proxy, 400, "InvalidParameters", **params)
    assert payload["error"]["message"].startswith(f"Invalid parameters: {bad_field} ")
    assert openai.requests == []


@pytest.mark.parametrize(
    "params",
    [{"model": ""}, {"temperature": -0.1}, {"max_tokens": 0}, {"max_retries": 11}, {"timeout": 0}],
)
async def test_the_schemas_constraints(proxy, openai, params):
    payload = await refused(proxy, 400, "InvalidParameters", **params)
    assert payload["error"]["message"].startswith("Invalid parameters for ai/LlmRequest: ")
    assert openai.requests == []


async def test_the_catalogue(proxy):
    commands = (await proxy.get("/v1/commands")).json()
    [command] = [c for c in commands if c["id"] == "ai/LlmRequest"]
    assert [(p["id"], p["type"], p["required"]) for p in command["parameters"]] == [
        ("model", "str", True),
        ("messages", "any", True),
        ("tools", "any", False),
        ("api_key", "str", False),
        ("api_base", "str", False),
        ("temperature", "any", False),
        ("max_tokens", "int", False),
        ("response_format", "any", False),
        ("tool_choice", "any", False),
        ("timeout", "any", False),
        ("max_retries", "int", False),
        ("extra_body", "any", False),
    ]
    secret = [p["id"] for p in command["parameters"] if p.get("secret")]
    assert secret == ["api_key"]
    assert all(p["description"] for p in command["parameters"])


# --- secrets, gRPC, the servicer ----------------------------------------------------------------


async def test_keys_stay_out_of_logs_messages_and_results(proxy, openai, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    openai.queue(rate_limited("30"), Canned(status=502, body=HTML_502, content_type="text/html"))
    calls: list[dict[str, Any]] = [
        {"timeout": 2},  # 429
        {"max_retries": 0},  # 502
        {},  # ok, the configured key
        {"api_key": KEY},
        {"api_key": WRONG_KEY},  # the fake's 401 quotes it
        {"api_key": f"Bearer {WRONG_KEY}"},
        {"api_key": WRONG_KEY, "response_format": {"type": "json_schema"}},  # invalid parameters
        {"api_key": f"{WRONG_KEY} x"},
        {"api_key": WRONG_KEY, "api_base": f"http://127.0.0.1:{closed_port}/v1", "max_retries": 0},
    ]
    seen = []
    for params in calls:
        _, payload = await COMMANDS.call(proxy, "LlmRequest", model=MODEL, messages=MESSAGES, **params)
        seen.append(json.dumps(payload))
    # Called directly, with the key configured (not a parameter the server would mask): the
    # connector's own messages and log lines.
    service = AiService(api_key=WRONG_KEY)
    try:
        for params in ({}, {"api_key": WRONG_KEY}):
            try:
                await service.LlmRequest(request(**params), context())
            except errors.CommandError as exc:
                seen.append(exc.message)
    finally:
        await service.aclose()
    seen.append(caplog.text)
    text = "\n".join(seen)
    for expected in ("AiRateLimited", "AiUpstreamUnavailable", "AiAuthenticationFailed", "InvalidParameters"):
        assert expected in text
    assert "/chat/completions" in text
    for secret in (KEY, WRONG_KEY, "FakeK3y", "Wr0ngK3y"):
        assert secret not in text
    assert sum(1 for r in openai.requests if r.headers.get("authorization") == f"Bearer {WRONG_KEY}") == 4


async def test_grpc_callers_get_the_answer_and_rich_errors(grpc_channel, openai):
    stub = ai_pb2_grpc.AiServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    reply = await stub.LlmRequest(request(response_format=SCHEMA), timeout=10)
    assert (reply.model, reply.finish_reason) == (ANSWERED_MODEL, "stop")
    assert json.loads(reply.parsed.json) == {"category": "billing", "summary": "My invoice is wrong."}
    openai.queue(rate_limited("12"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.LlmRequest(request(max_retries=0), timeout=10)
    failure = caught.value
    assert failure.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = [value for key, value in failure.trailing_metadata() or () if key == "grpc-status-details-bin"]
    assert isinstance(details[0], bytes)
    status = status_pb2.Status.FromString(details[0])
    reasons, delays = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            delays.append(retry.retry_delay.seconds)
    assert (reasons, delays) == (["AiRateLimited"], [12])


async def test_one_pool_opened_lazily_and_closed(openai):
    sessions = []

    def factory():
        sessions.append(aiohttp.ClientSession())
        return sessions[-1]

    service = AiService(session_factory=factory)
    assert sessions == []
    for _ in range(3):
        response = await service.LlmRequest(request(), context())
        assert response.content == "You said: My invoice is wrong."
    assert len(sessions) == 1
    await service.aclose()
    assert sessions[0].closed
    await service.aclose()


async def test_constructor_arguments_win_over_the_environment(openai, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_AI_API_BASE", "http://127.0.0.1:1/v1")
    service = AiService(api_base=f"{openai.origin}/proxy/v1", api_key="sk-other", backoff=0)
    try:
        with pytest.raises(errors.Unauthenticated):
            await service.LlmRequest(request(), context())
        assert openai.requests[-1].path == "/proxy/v1/chat/completions"
        assert openai.requests[-1].headers["authorization"] == "Bearer sk-other"
        openai.queue(Canned(status=500, body={}))
        await service.LlmRequest(request(api_key=KEY), context())
        assert len(openai.requests) == 3  # retried at once: backoff 0
    finally:
        await service.aclose()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("CONNECTOR_PROXY_AI_API_BASE", "api.openai.com/v1"),
        ("CONNECTOR_PROXY_AI_API_BASE", "https://user:secret-pw@llm.example/v1"),
        ("CONNECTOR_PROXY_AI_API_KEY", "sk-with a space"),
    ],
)
def test_an_unusable_configuration_stops_start_up_without_repeating_it(monkeypatch, setting, value):
    monkeypatch.setenv(setting, value)
    with pytest.raises(ValueError, match=setting) as caught:
        AiService()
    assert value not in str(caught.value)


def test_the_default_api_base_is_openais(monkeypatch):
    monkeypatch.delenv("CONNECTOR_PROXY_AI_API_BASE")
    assert str(AiService()._url) == "https://api.openai.com/v1/chat/completions"


# --- helpers --------------------------------------------------------------------------------------


def completion(content: str | None) -> dict[str, Any]:
    """A chat completion with this content, as a canned answer."""
    message = {"role": "assistant", "content": content, "refusal": None}
    return {
        "id": "chatcmpl-canned",
        "object": "chat.completion",
        "model": ANSWERED_MODEL,
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }


def request(**params: Any) -> ai_pb2.LlmRequestRequest:
    """A request as a gRPC caller builds it: JSON parameters as JsonValue."""
    params.setdefault("model", MODEL)
    params.setdefault("messages", MESSAGES)
    json_fields = {"messages", "tools", "tool_choice", "response_format", "extra_body"}
    message = ai_pb2.LlmRequestRequest(**{k: v for k, v in params.items() if k not in json_fields})
    for name in json_fields & params.keys():
        getattr(message, name).CopyFrom(json_values.dump(params[name]))
    return message


def context(seconds: float = 10) -> LocalContext:
    return LocalContext(time.monotonic() + seconds)

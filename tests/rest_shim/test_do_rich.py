"""``/v1/do`` with the rich test-only connector: every field kind decoded and encoded, the SpiffContext,
defaults, synchronous commands off the event loop, timeouts and result layouts, on both paths."""

from __future__ import annotations

import base64
import time
from typing import Any

import anyio
import pytest

from tests.conftest import client_for

pytestmark = pytest.mark.anyio

ECHO = "/v1/do/rich/Echo"

UNSET_REQUEST = {
    "name": "",
    "count": 0,
    "big": 0,
    "small": 0,
    "flag": False,
    "ratio": 0.0,
    "blob": "",
    "colour": "COLOUR_UNSPECIFIED",
    "inner": None,
    "numbers": [],
    "items": [],
    "scores": {},
    "data": None,
    "greeting": "hello",
    "retries": 3,
    "shade": "COLOUR_DARK_BLUE",
    "extra": {"a": [1, 2]},
    "mode": "",
    "token": "",
    "spiff": {
        "process_instance_id": None,
        "process_model_identifier": "",
        "task_id": "",
        "task_data": None,
        "callback_url": "",
    },
    "tree": None,
}


async def echo(client, body: dict[str, Any]) -> Any:
    response = await client.post(ECHO, json=body)
    assert response.status_code == 200, response.text
    return response.json()["command_response"]["body"]["request"]


async def rejected(client, body: dict[str, Any]) -> str:
    response = await client.post(ECHO, json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["error_code"] == "InvalidParameters"
    return str(error["message"])


async def test_every_field_kind_is_decoded_and_encoded(rich_proxy):
    body = {
        "name": "ada",
        "count": -12,
        "big": -(2**63),
        "small": 2**32 - 1,
        "flag": True,
        "ratio": 0.5,
        "blob": base64.b64encode(b"\x00\xffbytes").decode(),
        "colour": "red",
        "inner": {"label": "in", "size": 3, "tags": ["a", "b"]},
        "numbers": [1, "2", 3.0],
        "items": [{"label": "x"}, {"label": "y", "tags": ["t"]}],
        "scores": {"alice": 10, "bob": "20"},
        "data": {"nested": [1, 2.5, None, True, "s", {"big": 2**100}]},
        "greeting": "hi",
        "retries": 0,
        "shade": "COLOUR_RED",
        "extra": [1, "two"],
        "mode": "slow",
        "token": "s3cret",
        "tree": {"name": "root", "children": [{"name": "leaf", "children": [{"name": "deeper"}]}]},
    }
    request = await echo(rich_proxy, body)
    assert request == {
        **UNSET_REQUEST,
        "name": "ada",
        "count": -12,
        "big": -(2**63),
        "small": 2**32 - 1,
        "flag": True,
        "ratio": 0.5,
        "blob": body["blob"],
        "colour": "COLOUR_RED",
        "inner": {"label": "in", "size": 3, "tags": ["a", "b"]},
        "numbers": [1, 2, 3],
        "items": [{"label": "x", "size": 0, "tags": []}, {"label": "y", "size": 0, "tags": ["t"]}],
        "scores": {"alice": 10, "bob": 20},
        "data": {"nested": [1, 2.5, None, True, "s", {"big": 2**100}]},
        "greeting": "hi",
        "retries": 0,
        "shade": "COLOUR_RED",
        "extra": [1, "two"],
        "mode": "slow",
        "token": "s3cret",
        "tree": {
            "name": "root",
            "children": [{"name": "leaf", "children": [{"name": "deeper", "children": []}]}],
        },
    }


@pytest.mark.parametrize("sent", ["red", "RED", "Colour_Red", "COLOUR_RED", 1])
async def test_enum_accepts_names_with_or_without_prefix_and_numbers(rich_proxy, sent):
    assert (await echo(rich_proxy, {"name": "a", "colour": sent}))["colour"] == "COLOUR_RED"


@pytest.mark.parametrize("sent", ["purple", 7, True, 1.5, ["red"]])
async def test_enum_refuses_other_values(rich_proxy, sent):
    assert "colour" in await rejected(rich_proxy, {"name": "a", "colour": sent})


async def test_defaults_apply_only_to_absent_parameters(rich_proxy):
    defaulted = await echo(rich_proxy, {"name": "a"})
    assert (defaulted["greeting"], defaulted["retries"], defaulted["shade"], defaulted["extra"]) == (
        "hello",
        3,
        "COLOUR_DARK_BLUE",
        {"a": [1, 2]},
    )
    given = await echo(rich_proxy, {"name": "a", "greeting": "", "retries": 0, "shade": 0, "extra": None})
    # An explicit empty string, zero or enum zero is a value; null is absent.
    assert (given["greeting"], given["retries"], given["shade"], given["extra"]) == (
        "",
        0,
        "COLOUR_UNSPECIFIED",
        {"a": [1, 2]},
    )


async def test_nested_violations_name_their_path(rich_proxy):
    message = await rejected(
        rich_proxy,
        {
            "name": "a",
            "inner": {"label": "ok", "size": "big", "tags": ["fine", ["no"]]},
            "items": [{"label": "ok"}, {"label": "x", "size": 1.5}],
            "numbers": [1, "x", None],
            "scores": {"a": 1, "b": "many"},
        },
    )
    for path in ("inner.size", "inner.tags[1]", "items[1].size", "numbers[1]", "numbers[2]", "scores['b']"):
        assert path in message, f"{path} not in {message}"
    assert "items[0]" not in message


async def test_unknown_nested_keys_are_violations(rich_proxy):
    assert "inner.bogus" in await rejected(rich_proxy, {"name": "a", "inner": {"label": "x", "bogus": 1}})


async def test_nested_required_fields_are_enforced(rich_proxy):
    """The catalogue's schema says Inner.label and Tree.name are required; decoding must agree."""
    message = await rejected(
        rich_proxy,
        {
            "name": "a",
            "inner": {"size": 1},
            "items": [{"label": "ok"}, {"tags": []}],
            "tree": {"name": "root", "children": [{"children": []}]},
        },
    )
    for path in ("inner.label", "items[1].label", "tree.children[0].name"):
        assert path in message, f"{path} not in {message}"
    assert "items[0]" not in message


@pytest.mark.parametrize(
    ("field", "sent"), [("inner", "text"), ("inner", []), ("items", {}), ("scores", [1])]
)
async def test_wrong_container_shapes_are_refused(rich_proxy, field, sent):
    assert field in await rejected(rich_proxy, {"name": "a", field: sent})


async def test_spiff_context_is_filled_from_reserved_keys(rich_proxy):
    task_data = {"huge": 2**200, "neg": -(2**70), "float": 1.5, "list": [{"a": None}], "text": "é ✓"}
    request = await echo(
        rich_proxy,
        {
            "name": "a",
            "spiff__process_instance_id": 2**40,
            "spiff__process_model_identifier": "finance/invoices",
            "spiff__task_id": "88f9b549",
            "spiff__task_data": task_data,
            "spiff__callback_url": "http://backend/v1.0/tasks/1/88f9b549/callback",
        },
    )
    assert request["spiff"] == {
        "process_instance_id": 2**40,
        "process_model_identifier": "finance/invoices",
        "task_id": "88f9b549",
        "task_data": task_data,
        "callback_url": "http://backend/v1.0/tasks/1/88f9b549/callback",
    }


@pytest.mark.parametrize("instance_id", [None, "42", True, 1.5, 2**70, -(2**64)])
async def test_unusable_process_instance_id_is_left_unset(rich_proxy, instance_id):
    request = await echo(rich_proxy, {"name": "a", "spiff__process_instance_id": instance_id})
    assert request["spiff"]["process_instance_id"] is None


async def test_spiff_context_cannot_be_sent_as_a_parameter(rich_proxy):
    response = await rich_proxy.post(ECHO, json={"name": "a", "spiff": {"task_id": "forged"}})
    assert response.status_code == 200
    payload = response.json()
    assert payload["command_response"]["body"]["request"]["spiff"]["task_id"] == ""
    assert any("'spiff'" in line for line in payload["spiff__logs"])


async def test_spiff_keys_never_produce_ignored_lines(rich_proxy):
    response = await rich_proxy.post(ECHO, json={"name": "a", "spiff__task_data": {}, "spiff__unknown": 1})
    assert response.json()["spiff__logs"] == ["echo for a"]


async def test_large_task_data_reaches_the_command_exactly(rich_proxy):
    task_data = {f"k{i}": [2**64 + i, "v" * 1000] for i in range(5000)}  # about 5 MB
    request = await echo(rich_proxy, {"name": "a", "spiff__task_data": task_data})
    assert request["spiff"]["task_data"] == task_data


async def test_sync_command_runs_in_a_worker_thread(rich_proxy):
    response = await rich_proxy.post("/v1/do/rich/Sleep", json={"seconds": 0})
    assert response.status_code == 200
    assert response.json()["command_response"]["body"]["on_main_thread"] is False


async def test_blocking_sync_command_does_not_stall_other_calls(rich_proxy):
    finished: dict[str, float] = {}
    start = time.monotonic()

    async def call(name: str, path: str, body: dict[str, Any]) -> None:
        response = await rich_proxy.post(path, json=body)
        assert response.status_code == 200
        finished[name] = time.monotonic() - start

    async with anyio.create_task_group() as group:
        group.start_soon(call, "sleep", "/v1/do/rich/Sleep", {"seconds": 0.3})
        await anyio.sleep(0.05)
        group.start_soon(call, "echo", ECHO, {"name": "a"})
    assert finished["sleep"] >= 0.3
    assert finished["echo"] < 0.25, finished


@pytest.mark.parametrize("command", ["Nap", "Sleep"])
async def test_timeout_is_a_504_worded_the_same_with_the_same_logs_on_both_paths(make_rich_app, command):
    async with client_for(make_rich_app(command_timeout=0.1)) as client:
        start = time.monotonic()
        response = await client.post(f"/v1/do/rich/{command}", json={"seconds": 0.4})
        elapsed = time.monotonic() - start
    assert elapsed < 0.35
    assert response.status_code == 504
    payload = response.json()
    assert payload["error"] == {
        "error_code": "DeadlineExceeded",
        "message": "The command did not finish within 0.1 s.",
    }
    assert payload["command_response"]["http_status"] == 504
    # What the command logged before the deadline explains what it was waiting for.
    assert payload["spiff__logs"] == ["sleeping 0.4 s"]


async def test_logs_kept_from_a_timed_out_command_mask_its_secrets(make_rich_app):
    # Half a second: on a loaded machine the remote server may start the command late, and it
    # answers (logs included) only while it is ahead of the caller's deadline.
    async with client_for(make_rich_app(command_timeout=0.5)) as client:
        response = await client.post("/v1/do/rich/Nap", json={"seconds": 2, "token": "tok-5e1f"})
    assert response.status_code == 504
    assert response.json()["spiff__logs"] == ["sleeping 2 s", "holding token ***"]


async def test_logs_of_any_size_reach_spiff_logs(rich_proxy):
    """Log lines travel as trailing metadata on the remote path; gRPC's 8 KiB default is too small."""
    name = "x" * 100_000
    response = await rich_proxy.post(ECHO, json={"name": name})
    assert response.status_code == 200, response.text[:300]
    assert response.json()["spiff__logs"] == [f"echo for {name}"]


async def test_result_roles_fill_the_envelope(rich_proxy):
    response = await rich_proxy.post(
        "/v1/do/rich/Shaped", json={"body": {"id": 2**70, "s": "x"}, "status": 404, "mimetype": "text/plain"}
    )
    assert response.status_code == 200
    assert response.json() == {
        "command_response": {
            "body": {"id": 2**70, "s": "x"},
            "mimetype": "text/plain",
            "http_status": 404,
            "headers": {"X-Test": "yes"},
            "note": "extra key",
        },
        "command_response_version": 2,
        "error": None,
        "spiff__logs": [],
    }


async def test_unset_roles_get_envelope_defaults(rich_proxy):
    response = await rich_proxy.post("/v1/do/rich/Shaped", json={})
    command_response = response.json()["command_response"]
    assert command_response["body"] is None
    assert command_response["mimetype"] == "application/json"
    assert command_response["http_status"] == 200


@pytest.mark.parametrize("raw", ["{not json", "NaN", "[1e400]"])
async def test_result_that_is_not_json_is_a_500_envelope(rich_proxy, raw):
    response = await rich_proxy.post("/v1/do/rich/Shaped", json={"raw": raw})
    assert response.status_code == 500
    payload = response.json()
    assert payload["error"]["error_code"] == "InvalidResult"
    assert payload["command_response_version"] == 2
    assert raw not in payload["error"]["message"]


def _tree_json(depth: int) -> bytes:
    """``{"name": "a", "tree": {...}}`` with ``depth`` levels of children, built as text."""
    opening = '{"name": "n", "children": [' * depth
    closing = "]}" * depth
    return f'{{"name": "a", "tree": {opening}{{"name": "leaf"}}{closing}}}'.encode()


async def test_recursive_message_at_protobufs_depth_limit_round_trips(rich_proxy):
    response = await rich_proxy.post(ECHO, content=_tree_json(90))
    assert response.status_code == 200
    node = response.json()["command_response"]["body"]["request"]["tree"]
    depth = 0
    while node["children"]:
        [node] = node["children"]
        depth += 1
    assert (depth, node["name"]) == (90, "leaf")


@pytest.mark.parametrize("depth", [150, 450])
async def test_recursive_message_too_deep_for_protobuf_is_a_400(rich_proxy, depth):
    response = await rich_proxy.post(ECHO, content=_tree_json(depth))
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidParameters"

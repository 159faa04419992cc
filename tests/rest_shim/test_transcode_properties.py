"""Properties of the transcoder, checked on generated values (hypothesis): every JSON value crosses
``JsonValue`` and the shim unchanged, and every body either decodes or is refused with
``InvalidParameters`` naming its bad fields, on both paths.

"Unchanged" means JSON equality with the type kept: an int stays an int and a float a float
(``1`` is not ``1.0``, nor ``True``), a float keeps its exact value and the sign of zero, and an
object keeps its members in their order.
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import math
import re
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any, Literal

import httpx
import pytest
from google.protobuf import descriptor, message
from hypothesis import HealthCheck, example, given, settings, strategies as st

from rest_shim import Catalogue
from rest_shim._catalog import CommandSpec
from rest_shim._schema_json import INT_RANGES
from rest_shim._transcode import DecodeResult, encode_message
from server import json_values
from server._registry import Connector, discover
from server.schema import (
    enum_type,
    field_bounds,
    field_options,
    is_map,
    is_message,
    is_repeated,
    message_type,
)
from tests.conftest import client_for
from tests.protos_util import rich_modules, shim_factory

FD = descriptor.FieldDescriptor

# Reproducible in CI (a clean clone): a fixed derivation of the examples, and no example database.
# Not failed for slow generation, a matter of timing: the first draw of a fresh clone builds
# hypothesis' Unicode tables (about a second).
PROPERTY = settings(
    derandomize=True, database=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)
# Through the shim: one HTTP call per example, and shared fixtures (the shim keeps no state
# between calls, so sharing it across examples is what a real client sees anyway).
THROUGH_SHIM = settings(
    PROPERTY,
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# CPython refuses to turn longer integers into text or back (CVE-2020-10735); the README says so.
INT_DIGITS = sys.get_int_max_str_digits() or 4300
RESERVED = ("spiff__", "proxy__")
SPIFF_KEYS = (
    "spiff__process_instance_id",
    "spiff__process_model_identifier",
    "spiff__task_id",
    "spiff__task_data",
    "spiff__callback_url",
)

# --- JSON values -------------------------------------------------------------------------------

ODD_TEXT = [
    "",
    "\x00",
    "\x1f",
    "\x7f",
    "\u2028\u2029",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "😀",
    '"\\/',
    "\r\n\t",
]
SURROGATES: list[Literal["Cs"]] = ["Cs"]
TEXT = st.one_of(st.text(st.characters(exclude_categories=SURROGATES)), st.sampled_from(ODD_TEXT))
# Lone surrogates are valid JSON text ("\ud800") but not Unicode: only a request body can hold them.
WIRE_TEXT = st.one_of(TEXT, st.text(st.characters(categories=SURROGATES), min_size=1, max_size=2))
# Up to INT_DIGITS digits, built from a few small draws (drawing a 4300-digit number bit by bit
# would use up hypothesis' budget of data per example).
LONG_INTEGERS = st.builds(
    lambda digits, low, sign: (
        sign * (10 ** (digits - 1) + low) if low < 10 ** (digits - 1) else sign * (10**digits - 1)
    ),
    st.integers(1, INT_DIGITS),
    st.integers(0, 2**64),
    st.sampled_from([1, -1]),
)
INTEGERS = st.one_of(
    st.integers(),
    LONG_INTEGERS,
    st.sampled_from([2**31, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**308, -(10**400)]),
)
FLOATS = st.floats(allow_nan=False, allow_infinity=False)


def json_of(text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    scalars = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, text)
    return st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(text, inner, max_size=4)),
        max_leaves=12,
    )


JSON = json_of(TEXT)
WIRE_JSON = json_of(WIRE_TEXT)


def same_json(got: Any, sent: Any) -> bool:
    """Equal as JSON, with the same types, float bits (so -0.0 is not 0.0) and member order."""
    if type(got) is not type(sent):
        return False
    if isinstance(sent, float):
        return got == sent and math.copysign(1.0, got) == math.copysign(1.0, sent)
    if isinstance(sent, list):
        return len(got) == len(sent) and all(map(same_json, got, sent))
    if isinstance(sent, dict):
        return list(got) == list(sent) and all(same_json(got[key], sent[key]) for key in sent)
    return bool(got == sent)


@PROPERTY
@given(value=JSON)
@example(value=-0.0)
@example(value=1.0)
@example(value=1)
@example(value=True)
@example(value=5e-324)
@example(value=1.7976931348623157e308)
@example(value=0.1 + 0.2)
@example(value=-(10**INT_DIGITS) + 1)
@example(value={"a": 1, "": [None, {}], "\x00": "\u2028"})
def test_any_json_value_crosses_json_value_unchanged(value):
    carried = json_values.dump(value)
    assert same_json(json_values.load(carried), value)
    # The text is a fixed point: writing what was read gives the same text.
    assert json_values.dumps(json_values.loads(carried.json)) == carried.json


def test_integers_longer_than_cpythons_digit_limit_are_refused_not_mangled():
    """The README's limit: integers of up to 4,300 digits (CPython's guard against quadratic
    int-text conversion, CVE-2020-10735) stay integers; longer ones are refused, never rounded."""
    longest = 10**INT_DIGITS - 1
    assert json_values.load(json_values.dump(longest)) == longest
    with pytest.raises(ValueError, match="limit"):
        json_values.dumps(10**INT_DIGITS)
    with pytest.raises(ValueError, match="limit"):
        json_values.loads("1" * (INT_DIGITS + 1))


# --- bodies ------------------------------------------------------------------------------------


def _item_values(field: descriptor.FieldDescriptor, depth: int) -> st.SearchStrategy[Any]:
    """Values the decoder should take for one item of ``field`` (not always: e.g. "" for a required
    string, or an integer text out of range)."""
    kind = field.type
    if kind == FD.TYPE_STRING:
        allowed = sorted(field_options(field).allowed_values)
        if allowed:
            return st.sampled_from(allowed)
        return st.one_of(TEXT, st.integers(), FLOATS)
    bounds = field_bounds(field)
    if kind in INT_RANGES:
        low, high = INT_RANGES[kind]
        if bounds is not None:  # mostly within the declared range: the decoder checks it too
            low = max(low, int(bounds.minimum)) if bounds.minimum is not None else low
            high = min(high, int(bounds.maximum)) if bounds.maximum is not None else high
        numbers = st.integers(low, high)
        exact = st.integers(max(low, -(2**53)), min(high, 2**53))
        return st.one_of(
            numbers,
            numbers.map(str),
            exact.map(float),
            st.from_regex(r"\s*[+-]?\d+\s*", fullmatch=True),
        )
    if kind == FD.TYPE_BOOL:
        return st.one_of(st.booleans(), st.sampled_from(["true", "false", " TRUE ", "False", 0, 1]))
    if kind in (FD.TYPE_DOUBLE, FD.TYPE_FLOAT):
        if bounds is not None and bounds.minimum is not None:  # only a minimum of 0 is supported
            floats = st.floats(min_value=0, exclude_min=bounds.exclusive_minimum, allow_infinity=False)
            return st.one_of(floats, floats.map(repr), st.integers(min_value=1))
        return st.one_of(FLOATS, INTEGERS, FLOATS.map(repr))
    if kind == FD.TYPE_BYTES:
        return st.binary(max_size=8).map(lambda raw: base64.b64encode(raw).decode())
    if kind == FD.TYPE_ENUM:
        names = [v.name for v in enum_type(field).values]
        short = [name.split("_", 1)[-1] for name in names]
        tags = [v.number for v in enum_type(field).values]
        return st.sampled_from([*names, *(n.lower() for n in names), *short, *tags])
    if is_message(field, json_values.JSON_VALUE):
        return JSON
    # A nested message: its required fields always, the others maybe; recursive types end at depth 2.
    fields = [f for f in message_type(field).fields if depth < 2 or f.type != FD.TYPE_MESSAGE]
    return st.fixed_dictionaries(
        {f.name: _field_values(f, depth + 1) for f in fields if field_options(f).required},
        optional={f.name: _field_values(f, depth + 1) for f in fields if not field_options(f).required},
    )


def _field_values(field: descriptor.FieldDescriptor, depth: int = 0) -> st.SearchStrategy[Any]:
    if is_map(field):
        value = message_type(field).fields_by_name["value"]
        return st.dictionaries(TEXT, _item_values(value, depth), max_size=3)
    if is_repeated(field):
        return st.lists(_item_values(field, depth), max_size=3)
    return _item_values(field, depth)


def _mostly(likely: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``likely`` four times in five, so that bodies with many parameters still decode at times."""
    return st.integers(0, 4).flatmap(lambda n: other if n == 0 else likely)


def parameters(spec: CommandSpec) -> list[descriptor.FieldDescriptor]:
    """The request fields that are parameters (not the SpiffContext)."""
    return [f for f in spec.decoder.descriptor.fields if f.name in spec.decoder.converters]


def bodies(
    spec: CommandSpec, *, async_key: bool = True, surrogates: bool = True
) -> st.SearchStrategy[dict[str, Any]]:
    """Request bodies for ``spec``: its parameters with fitting values, or any JSON, or absent;
    then other keys: any text, parameter names again, ``spiff__*`` and ``proxy__*``, with any JSON.
    With ``surrogates``, keys and text may hold lone surrogates.

    Half of the bodies are well formed (fitting values, unknown keys only), so that a command with
    many parameters is seen decoding too, whatever else hypothesis favours in a given run."""
    text, anything = (WIRE_TEXT, WIRE_JSON) if surrogates else (TEXT, JSON)
    fields = parameters(spec)
    names = {f.name for f in fields}
    proxy_keys = text.map(lambda key: "proxy__" + key)
    if not async_key:  # proxy__async may turn the call into a job, another subject
        proxy_keys = proxy_keys.filter(lambda key: key != "proxy__async")
    keys = st.one_of(
        text,
        st.sampled_from(sorted(names)),
        st.sampled_from(SPIFF_KEYS),
        text.map(lambda key: "spiff__" + key),
        proxy_keys,
    )
    unknown_keys = text.filter(lambda key: key not in names and not key.startswith(RESERVED))

    def made(values: Callable[[descriptor.FieldDescriptor], st.SearchStrategy[Any]], others: Any) -> Any:
        return st.tuples(
            st.fixed_dictionaries(
                {f.name: values(f) for f in fields if field_options(f).required},
                optional={f.name: values(f) for f in fields if not field_options(f).required},
            ),
            st.dictionaries(others, anything, max_size=4),
        ).map(lambda pair: {**pair[0], **pair[1]})

    return st.one_of(
        made(lambda f: _mostly(_field_values(f), anything), keys),
        made(lambda f: _field_values(f).filter(lambda v: v != ""), unknown_keys),  # "" is absent
    )


def check_decision(spec: CommandSpec, body: dict[str, Any], decoded: DecodeResult) -> None:
    """A message, or violations that each name a parameter of the body (or the body itself)."""
    names = set(spec.decoder.converters)
    assert (decoded.message is None) == bool(decoded.violations)
    assert decoded.ignored == [key for key in body if not key.startswith(RESERVED) and key not in names]
    required = {f.name for f in parameters(spec) if field_options(f).required}
    named = set()
    for violation in decoded.violations:
        root = re.split(r"[.\[]", violation.field, maxsplit=1)[0]
        named.add(root)
        assert violation.description
        if root == "(body)" or (root == "spiff__task_data" and spec.decoder.context_field is not None):
            continue
        assert root in names, violation
        assert body.get(root) is not None or root in required, violation
    if decoded.violations:
        assert {name for name in required if body.get(name) is None} <= named


def as_request(spec: CommandSpec, written: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A request written as responses write messages, sent again with the first body's reserved keys.

    Not quite the written form: a string parameter with allowed values that was left out is
    written ``""``, which is not one of its values (nor in its schema's ``enum``), so it is left
    out again. The rich command's ``mode`` is the only such parameter here, at the top level.
    """
    again = {
        key: value
        for key, value in written.items()
        if not (spec.decoder.context_field is not None and key == spec.decoder.context_field.name)
        and not (value == "" and field_options(spec.decoder.descriptor.fields_by_name[key]).allowed_values)
    }
    again.update((key, value) for key, value in body.items() if key.startswith(RESERVED))
    return again


def check_redecodes(spec: CommandSpec, body: dict[str, Any], msg: message.Message) -> None:
    """A decoded message, written as JSON (as responses write messages) and decoded again, is the
    same message."""
    again = as_request(spec, encode_message(msg), body)
    redecoded = spec.decoder.decode(again)
    assert redecoded.violations == []
    assert redecoded.message == msg


# Real commands of every kind of parameter, the conformance ones, and the rich test-only command
# (nested, repeated, map, enum, bytes, recursive and SpiffContext fields).
CONNECTOR_PROTOS = ("aws", "example", "http", "jsonata", "postgres_v2", "slack", "smtp", "typeahead")
DECODED = [
    "http/GetRequestV2",
    "http/PostRequestV2",
    "smtp/SendEmail",
    "postgres_v2/InsertValuesV2",
    "aws/QueryDynamoTable",
    "typeahead/Search",
    "example/Example",
    "example/Delay",
    "conformance/Echo",
    "conformance/Sleep",
    "rich/Echo",
]
# Those that call nothing outside the process when they decode.
THROUGH_THE_SHIM = ["example/Example", "conformance/Echo", "rich/Echo"]


@functools.cache
def specs() -> Catalogue:
    """The commands' specs from their descriptors alone (no servicer is built); after the rich
    test proto was compiled (the ``rich_connector`` fixture)."""
    rich_pb2, _ = rich_modules()
    services = list(rich_pb2.DESCRIPTOR.services_by_name.values())
    for name in (*CONNECTOR_PROTOS, "conformance"):
        module: Any = importlib.import_module(f"spiff.connector.{name}.v1.{name}_pb2")
        services.extend(module.DESCRIPTOR.services_by_name.values())
    return Catalogue(services)


@pytest.fixture
def catalogue(rich_connector: Connector) -> Catalogue:
    return specs()


def find(catalogue: Catalogue, command: str) -> CommandSpec:
    connector, name = command.split("/")
    spec = catalogue.find(connector, name)
    assert spec is not None
    return spec


@pytest.mark.parametrize("command", [pytest.param(c, id=c) for c in DECODED])
def test_every_body_decodes_or_names_its_bad_fields(catalogue, command):
    spec = find(catalogue, command)
    outcomes = set()

    # A SpiffContext cannot hold a lone surrogate; json_values.loads refuses them before any decoder.
    @PROPERTY
    @given(body=bodies(spec, surrogates=spec.decoder.context_field is None))
    def check(body):
        decoded = spec.decoder.decode(body)
        check_decision(spec, body, decoded)
        if decoded.message is not None:
            check_redecodes(spec, body, decoded.message)
        outcomes.add(decoded.message is not None)

    check()
    # Both answers were reached: the bodies are not all refused, nor all accepted.
    assert outcomes == {True, False}


@pytest.mark.parametrize(
    ("parameter", "sent", "problem"),
    [
        pytest.param("count", "1\x1f", "count must be an integer", id="int-text-with-a-separator-char"),
        pytest.param("count", "1" * (INT_DIGITS + 1), "count must be an integer", id="int-text-too-long"),
        pytest.param("ratio", 10**400, "ratio is out of range for a number", id="int-beyond-a-double"),
    ],
)
def test_values_found_to_escape_the_decoder_are_violations(catalogue, parameter, sent, problem):
    decoded = find(catalogue, "rich/Echo").decoder.decode({"name": "ada", parameter: sent})
    assert decoded.message is None
    assert [f"{v.field} {v.description}" for v in decoded.violations] == [problem]


# Lone surrogates ("\ud800" in the JSON text: valid JSON, not Unicode) never reach a decoder:
# json_values.loads refuses them (see the shim's tests below). The decoder-only property above
# still feeds them to commands without a SpiffContext, where they are named or refused.


# --- through the shim --------------------------------------------------------------------------


@pytest.fixture(params=["local", "remote"])
async def shim(
    request: pytest.FixtureRequest, connectors: list[Connector], rich_connector: Connector
) -> AsyncIterator[httpx.AsyncClient]:
    served = [*connectors, *discover(["tests.conformance_connectors"]), rich_connector]
    async with shim_factory(served, request.param) as factory, client_for(factory()) as client:
        yield client


async def post(client: httpx.AsyncClient, command: str, body: dict[str, Any]) -> tuple[int, Any]:
    # json.dumps escapes lone surrogates ("\ud800"), which are JSON but not UTF-8.
    content = json.dumps(body).encode()
    response = await client.post(
        f"/v1/do/{command}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code < 500, response.text
    assert "Traceback" not in response.text
    assert response.headers["content-type"] == "application/json"
    payload = json_values.loads(response.content)
    assert set(payload) == {"command_response", "command_response_version", "error", "spiff__logs"}
    assert payload["command_response"]["http_status"] == response.status_code
    return response.status_code, payload


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        {"name": "ada", "inner": {"label": "x", "\ud800": 1}},  # a nested unknown key
        {"name": "ada", "scores": {"\ud800": 1}},  # a map key
        {"name": "ada", "spiff__task_id": "\ud800"},  # a SpiffContext's value
        {"name": "\udfff"},  # a string parameter
    ],
    ids=["nested-key", "map-key", "spiff-key", "string"],
)
async def test_lone_surrogates_are_invalid_json(shim, body):
    status, payload = await post(shim, "rich/Echo", body)
    assert status == 400
    assert payload["error"]["error_code"] == "InvalidJson"
    assert "lone surrogate" in payload["error"]["message"]


@pytest.mark.anyio
async def test_surrogate_pairs_are_ordinary_text(shim):
    status, payload = await post(shim, "conformance/Echo", {"value": "\ud83d\ude00 \U0001f600"})
    assert status == 200
    assert payload["command_response"]["body"] == "\U0001f600 \U0001f600"


@pytest.mark.anyio
async def test_a_longer_integer_than_the_limit_is_invalid_json(shim):
    content = b'{"value": 1' + b"0" * INT_DIGITS + b"}"  # json.dumps itself refuses to write it
    response = await shim.post(
        "/v1/do/conformance/Echo", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["error_code"] == "InvalidJson"


@pytest.mark.anyio
@THROUGH_SHIM
@given(value=JSON)
@example(value=None)
@example(value=[-0.0, 1.0, 1, 10**300, -(10**INT_DIGITS) + 1, {"\u2028": ""}])
async def test_any_json_value_crosses_the_shim_unchanged(shim, value):
    status, payload = await post(shim, "conformance/Echo", {"value": value})
    if value is None:
        # "null means absent" (README), and conformance/Echo requires its value.
        assert status == 400
        assert payload["error"]["error_code"] == "InvalidParameters"
        assert "value is required" in payload["error"]["message"]
        return
    assert status == 200, payload
    assert payload["error"] is None
    assert same_json(payload["command_response"]["body"], value)


def _shim_cases(command: str) -> st.SearchStrategy[tuple[str, dict[str, Any]]]:
    # No lone surrogates: the shim refuses them as InvalidJson before decoding (tested above).
    return st.tuples(st.just(command), bodies(find(specs(), command), async_key=False, surrogates=False))


# Drawn before the test runs: hypothesis stops a draw that runs out of data with an exception that
# would end anyio's test runner if it were raised inside the test's coroutine (so no st.data()).
SHIM_CASES = st.sampled_from(THROUGH_THE_SHIM).flatmap(_shim_cases)


@pytest.mark.anyio
@THROUGH_SHIM
@given(case=SHIM_CASES)
async def test_every_body_is_answered_or_refused_naming_its_bad_fields(shim, catalogue, case):
    command, body = case
    spec = find(catalogue, command)
    decoded = spec.decoder.decode(body)
    check_decision(spec, body, decoded)
    status, payload = await post(shim, command, body)
    if decoded.message is None:
        assert status == 400, payload
        error = payload["error"]
        assert error["error_code"] == "InvalidParameters"
        for violation in decoded.violations:
            assert f"{violation.field} {violation.description}" in error["message"]
        return
    assert status == 200, payload
    assert payload["error"] is None
    if command == "rich/Echo":
        # rich/Echo answers the request it received: sent again, it is received the same.
        received = payload["command_response"]["body"]["request"]
        status, second = await post(shim, command, as_request(spec, received, body))
        assert status == 200, second
        assert same_json(second["command_response"]["body"]["request"], received)

"""/openapi.json describes every command with the same schema as /v1/commands, and is valid OpenAPI 3.1."""

from __future__ import annotations

import re

import jsonschema
import pytest
from hypothesis import given, settings, strategies as st
from openapi_spec_validator import validate

from rest_shim._schema_json import INT_TEXT, int_text_pattern
from tests.conftest import client_for

pytestmark = pytest.mark.anyio


async def test_document_is_valid_openapi(proxy):
    response = await proxy.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    validate(response.json())


async def test_every_command_has_a_path_with_its_parameters(proxy):
    document = (await proxy.get("/openapi.json")).json()
    commands = (await proxy.get("/v1/commands")).json()
    assert sorted(document["paths"]) == sorted(f"/v1/do/{c['id']}" for c in commands)
    for command in commands:
        schema = document["paths"][f"/v1/do/{command['id']}"]["post"]["requestBody"]["content"][
            "application/json"
        ]["schema"]
        required = [p["id"] for p in command["parameters"] if p["required"]]
        assert schema.get("required", []) == required
        for parameter in command["parameters"]:
            assert schema["properties"][parameter["id"]] == parameter["schema"]


async def test_request_schema_accepts_what_spiff_sends_and_rejects_wrong_types(proxy):
    document = (await proxy.get("/openapi.json")).json()
    post = document["paths"]["/v1/do/http/GetRequestV2"]["post"]
    schema = post["requestBody"]["content"]["application/json"]["schema"]
    sent = {
        "url": "https://api.example.com/items",
        "headers": {"Accept": "application/json"},
        "attempts": 3,
        "spiff__task_id": "88f9b549",
        "spiff__task_data": {"x": 1},
        "stale_parameter": "ignored",
    }
    jsonschema.validate(sent, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"url": "https://x", "attempts": "many"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"headers": {}}, schema)


async def test_a_real_answer_matches_the_envelope_schema(proxy):
    document = (await proxy.get("/openapi.json")).json()
    envelope = document["components"]["schemas"]["Envelope"]
    for body in ({"message": "hi"}, {}):
        answer = (await proxy.post("/v1/do/example/Example", json=body)).json()
        jsonschema.validate(answer, envelope)


async def test_document_needs_the_api_key_when_one_is_set(make_app):
    async with client_for(make_app(api_key="k")) as client:
        assert (await client.get("/openapi.json")).status_code == 401
        assert (
            await client.get("/openapi.json", headers={"Spiff-Connector-Proxy-Api-Key": "k"})
        ).status_code == 200


BOUNDS = st.sampled_from(
    [0, 1, -1, 9, 10, 99, 100, 65535, 86400, 604800, 2**31 - 1, -(2**31), 2**63 - 1, 2**64 - 1]
)


@settings(derandomize=True, database=None, max_examples=300)
@given(
    low=st.one_of(BOUNDS, st.integers(-(10**6), 10**6)),
    high=st.one_of(BOUNDS, st.integers(-(10**6), 10**6)),
    text=st.one_of(
        st.integers(-(2**65), 2**65).map(str),
        st.from_regex(r"[ \t]?[+-]?0{0,3}[0-9]{1,7}\n?", fullmatch=True),
        st.text(max_size=6),
    ),
)
def test_an_integer_pattern_takes_exactly_the_texts_of_its_range(low, high, text):
    """The pattern the schema gives an integer's text agrees with the decoder: the text of an
    integer (INT_TEXT) whose value is within the bounds."""
    low, high = min(low, high), max(low, high)
    expected = re.fullmatch(INT_TEXT, text) is not None and low <= int(text) <= high
    assert (re.fullmatch(int_text_pattern(low, high), text) is not None) == expected

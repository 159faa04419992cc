"""``GET /v1/commands`` and ``GET /v1/auths``: the catalogue built from descriptors (spec §1.1, §1.2, §6)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from rest_shim import Catalogue
from rest_shim._schema_json import BASE64_TEXT, BOOL_TEXT, NUMBER_TEXT, int_text_pattern
from server._registry import Connector
from tests.conftest import client_for
from tests.protos_util import shim_factory

pytestmark = pytest.mark.anyio

SPIFF_TYPES = {"str", "int", "bool", "any"}

# The rich Echo request, in declaration order, without its SpiffContext field ``spiff``:
# (parameter id, spiff type, JSON Schema of the value without description/default/examples).
# The schemas state the coercions (an integer's text, a boolean's, a number for a string) and,
# for optional parameters, null (absent).


def _integer(low: int, high: int) -> dict[str, Any]:
    pattern = f"^(?:{int_text_pattern(low, high)})$"
    return {"type": ["integer", "string"], "minimum": low, "maximum": high, "pattern": pattern}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {**schema, "type": [*schema["type"], "null"]}


INT32 = _integer(-(2**31), 2**31 - 1)
COLOUR = {
    "anyOf": [
        {
            "type": "string",
            "pattern": "^(?:"
            + "|".join(
                "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in name)
                for name in (
                    "COLOUR_UNSPECIFIED",
                    "UNSPECIFIED",
                    "COLOUR_RED",
                    "RED",
                    "COLOUR_DARK_BLUE",
                    "DARK_BLUE",
                )
            )
            + ")$",
        },
        {"type": "integer", "enum": [0, 1, 2]},
        {"type": "null"},
    ]
}
ECHO_PARAMETERS = [
    ("name", "str", {"type": ["string", "number"], "minLength": 1}),
    ("count", "int", _nullable(INT32)),
    ("big", "int", _nullable(_integer(-(2**63), 2**63 - 1))),
    ("small", "int", _nullable(_integer(0, 2**32 - 1))),
    (
        "flag",
        "bool",
        {
            "type": ["boolean", "string", "integer", "null"],
            "pattern": f"^(?:{BOOL_TEXT})$",
            "minimum": 0,
            "maximum": 1,
        },
    ),
    ("ratio", "any", {"type": ["number", "string", "null"], "pattern": f"^(?:{NUMBER_TEXT})$"}),
    (
        "blob",
        "str",
        {"type": ["string", "null"], "contentEncoding": "base64", "pattern": f"^(?:{BASE64_TEXT})$"},
    ),
    ("colour", "str", COLOUR),
    ("inner", "any", None),
    ("numbers", "any", {"type": ["array", "null"], "items": INT32}),
    ("items", "any", None),
    ("scores", "any", None),
    ("data", "any", {}),
    ("greeting", "str", {"type": ["string", "number", "null"]}),
    ("retries", "int", _nullable(INT32)),
    ("shade", "str", COLOUR),
    ("extra", "any", {}),
    ("mode", "str", {"type": ["string", "null"], "enum": ["fast", "slow", None]}),
    ("token", "str", {"type": ["string", "number", "null"]}),
    ("tree", "any", None),
]

INNER_SCHEMA = {
    "type": "object",
    "properties": {
        "label": {"type": ["string", "number"], "minLength": 1},
        "size": _nullable(INT32),
        "tags": {"type": ["array", "null"], "items": {"type": ["string", "number"]}},
    },
    "additionalProperties": False,
    "required": ["label"],
}

ANNOTATIONS = {"description", "default", "examples", "writeOnly"}


def _command(catalogue: list[dict[str, Any]], command_id: str) -> dict[str, Any]:
    matches = [c for c in catalogue if c["id"] == command_id]
    assert len(matches) == 1, f"{command_id} appears {len(matches)} times"
    return matches[0]


def _parameters(command: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["id"]: p for p in command["parameters"]}


async def test_commands_is_a_json_array(proxy):
    response = await proxy.get("/v1/commands")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    catalogue = response.json()
    assert isinstance(catalogue, list)
    assert catalogue, "the discovered connectors offer at least example/Example"
    for command in catalogue:
        assert isinstance(command, dict)
        assert isinstance(command["parameters"], list)


async def test_command_ids_are_connector_slash_command_and_unique(proxy, rich_proxy):
    for client in (proxy, rich_proxy):
        ids = [c["id"] for c in (await client.get("/v1/commands")).json()]
        assert all(re.fullmatch(r"[^/]+/[^/]+", i) for i in ids), ids
        assert len(ids) == len(set(ids))


async def test_every_parameter_has_id_type_and_required(proxy, rich_proxy):
    for client in (proxy, rich_proxy):
        for command in (await client.get("/v1/commands")).json():
            for parameter in command["parameters"]:
                assert isinstance(parameter["id"], str)
                assert parameter["id"]
                assert parameter["type"] in SPIFF_TYPES
                assert isinstance(parameter["required"], bool)


async def test_example_command_is_described_exactly(proxy):
    catalogue = (await proxy.get("/v1/commands")).json()
    assert _command(catalogue, "example/Example") == {
        "id": "example/Example",
        "description": "Echoes the message back, as the demo connector always has.",
        "parameters": [
            {
                "id": "message",
                "type": "str",
                "required": True,
                "description": "The text to echo.",
                "secret": False,
                "schema": {
                    "type": ["string", "number"],
                    "minLength": 1,
                    "description": "The text to echo.",
                    "examples": ["hello"],
                },
            }
        ],
    }


async def test_parameters_keep_declaration_order_and_hide_the_spiff_context(rich_proxy):
    echo = _command((await rich_proxy.get("/v1/commands")).json(), "rich/Echo")
    assert [p["id"] for p in echo["parameters"]] == [name for name, _, _ in ECHO_PARAMETERS]
    assert "spiff" not in _parameters(echo)
    assert "SpiffContext" not in str(echo)


@pytest.mark.parametrize(
    ("name", "spiff_type", "schema"), ECHO_PARAMETERS, ids=[p[0] for p in ECHO_PARAMETERS]
)
async def test_field_kind_gives_spiff_type_and_schema(rich_proxy, name, spiff_type, schema):
    echo = _command((await rich_proxy.get("/v1/commands")).json(), "rich/Echo")
    parameter = _parameters(echo)[name]
    assert parameter["type"] == spiff_type
    if schema is not None:
        value_schema = {k: v for k, v in parameter["schema"].items() if k not in ANNOTATIONS}
        assert value_schema == schema


async def test_nested_repeated_and_map_schemas(rich_proxy):
    parameters = _parameters(_command((await rich_proxy.get("/v1/commands")).json(), "rich/Echo"))
    assert parameters["inner"]["schema"] == {**INNER_SCHEMA, "type": ["object", "null"]}
    assert parameters["items"]["schema"] == {"type": ["array", "null"], "items": INNER_SCHEMA}
    assert parameters["scores"]["schema"] == {"type": ["object", "null"], "additionalProperties": INT32}


async def test_recursive_message_schema_is_cut_off(rich_proxy):
    tree = _parameters(_command((await rich_proxy.get("/v1/commands")).json(), "rich/Echo"))["tree"]["schema"]
    depth = 0
    node = tree
    while "properties" in node:
        assert node["required"] == ["name"]
        node = node["properties"]["children"]["items"]
        depth += 1
    assert node == {"type": "object"}
    assert 1 < depth < 20


async def test_declared_metadata_is_present_and_undeclared_is_absent(rich_proxy):
    parameters = _parameters(_command((await rich_proxy.get("/v1/commands")).json(), "rich/Echo"))

    name = parameters["name"]
    assert name["required"] is True
    assert name["description"] == "Who is asking."
    assert name["schema"]["description"] == "Who is asking."
    assert name["schema"]["examples"] == ["ada"]
    assert "default" not in name

    assert parameters["greeting"]["default"] == "hello"
    assert parameters["greeting"]["schema"]["default"] == "hello"
    assert parameters["retries"]["default"] == 3
    assert parameters["shade"]["default"] == "COLOUR_DARK_BLUE"
    assert parameters["extra"]["default"] == {"a": [1, 2]}

    assert parameters["mode"]["enum"] == ["fast", "slow"]
    assert parameters["colour"]["enum"] == ["COLOUR_UNSPECIFIED", "COLOUR_RED", "COLOUR_DARK_BLUE"]

    assert parameters["token"]["secret"] is True
    assert parameters["token"]["schema"]["writeOnly"] is True
    assert parameters["token"]["description"] == "The API token."

    big = parameters["big"]
    assert big["secret"] is False
    assert big["required"] is False
    for absent in ("description", "default", "enum"):
        assert absent not in big
    assert not ANNOTATIONS & set(big["schema"])


async def test_command_description_only_when_declared(rich_proxy):
    catalogue = (await rich_proxy.get("/v1/commands")).json()
    assert (
        _command(catalogue, "rich/Echo")["description"] == "Returns the request as the command received it."
    )
    assert "description" not in _command(catalogue, "rich/Sleep")


async def test_catalogue_is_identical_on_both_paths(rich_connector: Connector, connectors: list[Connector]):
    """The remote path reads descriptors by reflection; options must survive it unchanged."""
    bodies = {}
    for path in ("local", "remote"):
        async with (
            shim_factory([*connectors, rich_connector], path) as factory,
            client_for(factory()) as client,
        ):
            commands = await client.get("/v1/commands")
            auths = await client.get("/v1/auths")
            bodies[path] = (commands.json(), auths.json())
    assert bodies["local"] == bodies["remote"]
    assert {c["id"] for c in bodies["local"][0]} >= {"example/Example", "rich/Echo", "rich/Fail"}


async def test_auths_lists_the_declared_handlers(rich_proxy):
    response = await rich_proxy.get("/v1/auths")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == [
        {
            "id": "rich/OAuth",
            "description": "A test OAuth handler.",
            "parameters": [
                {"id": "client_id", "type": "str", "required": True, "description": "The OAuth client id."},
                {"id": "scopes", "type": "any", "required": False, "description": ""},
            ],
        }
    ]


async def test_auths_is_an_array_even_without_handlers(proxy):
    response = await proxy.get("/v1/auths")
    assert response.status_code == 200
    assert isinstance(response.json(), list)
    assert "example/" not in response.text


async def test_commands_route_is_get_only(proxy):
    response = await proxy.post("/v1/commands", json={})
    assert response.status_code == 405
    assert response.headers["content-type"] == "application/json"


def test_catalogue_refuses_two_services_with_one_connector_name(connectors, rich_connector):
    example = next(c for c in connectors if c.name == "example")
    with pytest.raises(ValueError, match="'example'"):
        Catalogue([example.service, rich_connector.service, example.service])

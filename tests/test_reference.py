"""The connector reference in docs/ is generated from the protos and kept current."""

from __future__ import annotations

import pathlib
import re
import sys

import grpc
import pytest

from connector_proxy import reference
from server._registry import discover
from server.schema import SPIFF_CONTEXT, command_options, connector_options, is_message

CODE_NAMES = {code.name for code in grpc.StatusCode}


def test_committed_reference_is_current():
    assert reference.main(["--check"]) == 0, "docs/connectors.md is stale: run make docs"


def test_reference_lists_every_command_and_parameter():
    connectors = discover(["connectors"])
    text = reference.render(reference.connector_services(connectors))
    for connector in connectors:
        for command in connector.commands:
            assert f"### `{command.id}`" in text
            for field in command.method.input_type.fields:
                if not is_message(field, SPIFF_CONTEXT):  # spiff__* keys, not a parameter
                    assert f"| `{field.name}` |" in text


@pytest.mark.parametrize("connector", discover(["connectors"]), ids=lambda c: c.name)
def test_documented_errors_name_real_grpc_codes(connector):
    documented = list(connector_options(connector.service).errors)
    for command in connector.commands:
        documented += command_options(command.method).errors
    for error in documented:
        assert error.error_code
        assert error.when
        assert error.grpc_code in CODE_NAMES or error.grpc_code == "", error.grpc_code


def _source_text(connector) -> str:
    module = sys.modules[type(connector.servicer).__module__.split("._")[0]]
    path = pathlib.Path(module.__file__ or "")
    files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
    return "".join(f.read_text() for f in files)


@pytest.mark.parametrize("connector", discover(["connectors"]), ids=lambda c: c.name)
def test_every_setting_a_connector_reads_is_declared_in_its_proto(connector):
    read = set(re.findall(r"CONNECTOR_PROXY_[A-Z0-9_]+", _source_text(connector)))
    # The settings an OAuth 2.0 auth handler names are read by the server on the connector's behalf.
    for auth in connector_options(connector.service).auths:
        flow = auth.oauth2
        read |= {
            name
            for name in (
                flow.authorize_url_setting,
                flow.token_url_setting,
                flow.scopes_setting,
                flow.client_id_setting,
                flow.client_secret_setting,
            )
            if name
        }
    declared = {setting.name for setting in connector_options(connector.service).settings}
    assert read == declared
    prefix = f"CONNECTOR_PROXY_{connector.name.upper()}_"
    assert all(name.startswith(prefix) for name in declared)


def test_connectors_of_other_servers_are_documented_and_test_only_ones_are_not():
    text = reference.render(reference.connector_services(discover(["connectors"])))
    jsonata = text[text.index("## jsonata") :]
    assert "Served by a server of its own" in jsonata[: jsonata.index("### ")]
    assert "### `jsonata/Evaluate`" in text
    assert "## conformance" not in text
    assert "Served by a server of its own" not in text[text.index("## example") : text.index("## http")]

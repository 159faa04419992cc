"""The connector reference (docs/connectors.md), generated from the protos' descriptors.

``python -m connector_proxy.reference`` writes it; ``--check`` fails when the committed file is stale.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from google.protobuf import descriptor

from rest_shim._schema_json import field_schema, spiff_type
from server._registry import Connector, discover
from server.schema import (
    SPIFF_CONTEXT,
    command_options,
    connector_name,
    connector_options,
    field_bounds,
    field_options,
    is_message,
)

__all__ = ["connector_services", "render"]

ROOT = pathlib.Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "connectors.md"
# Services in protos/ that exist for the tests only (the cross-language conformance cases).
_TEST_ONLY = ("spiff.connector.conformance.",)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _json_type(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if kind is None:
        if "anyOf" in schema:  # an enum: its names
            return _json_type(schema["anyOf"][0])
        return "any JSON"
    if isinstance(kind, list):  # the declared type first, then the coercions and null
        kind = kind[0]
    if kind == "array":
        return f"list of {_json_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"] if v is not None)
    return str(kind)


def _constraints(field: descriptor.FieldDescriptor) -> str:
    """The constraints a field declares, as text: ``≥ 1``, ``> 0``, ``1 to 65535 characters``..."""
    bounds = field_bounds(field)
    if bounds is None:
        return ""
    parts = []
    number = "{:g}".format
    if bounds.minimum is not None:
        parts.append(
            f"> {number(bounds.minimum)}" if bounds.exclusive_minimum else f"≥ {number(bounds.minimum)}"
        )
    if bounds.maximum is not None:
        parts.append(f"≤ {number(bounds.maximum)}")
    if bounds.min_length is not None:
        parts.append(f"at least {bounds.min_length} characters")
    if bounds.max_length is not None:
        parts.append(f"at most {bounds.max_length} characters")
    if bounds.pattern is not None:
        parts.append(f"matches `{bounds.pattern.pattern}`")
    return ", " + ", ".join(parts)


def _parameters(fields: Iterable[descriptor.FieldDescriptor]) -> list[str]:
    rows = ["| parameter | type | required | default | description |", "|---|---|---|---|---|"]
    for field in fields:
        options = field_options(field)
        default = f"`{options.default_json}`" if options.default_json else ""
        description = options.description + (" *Secret: never logged.*" if options.secret else "")
        kind = f"{spiff_type(field)} ({_json_type(field_schema(field))}{_constraints(field)})"
        required = "yes" if options.required else ""
        rows.append(f"| `{field.name}` | {_cell(kind)} | {required} | {default} | {_cell(description)} |")
    return rows


def _errors(errors: Sequence[Any]) -> list[str]:
    rows = ["| error_code | gRPC code | when |", "|---|---|---|"]
    rows += [f"| `{e.error_code}` | {e.grpc_code or '(varies)'} | {_cell(e.when)} |" for e in errors]
    return rows


def _auth(connector: str, auth: Any) -> list[str]:
    auth_id = f"{connector}/{auth.name}"
    lines = [f"Auth handler `{auth_id}` (listed by `GET /v1/auths`): {auth.description}", ""]
    if auth.HasField("oauth2"):
        flow = auth.oauth2
        lines += [
            "OAuth 2.0 authorization code with PKCE, run by `GET /v1/auth/" + auth_id + "` "
            '(README, "OAuth sign-in"); spiff-arena stores the token set as the secret '
            f"`{auth_id}`, passed as `secret:{auth_id}`.",
            "",
        ]
        rows = [
            ("authorization endpoint", flow.authorize_url, flow.authorize_url_setting),
            ("token endpoint", flow.token_url, flow.token_url_setting),
            ("scopes", " ".join(flow.scopes), flow.scopes_setting),
            ("client id", "", flow.client_id_setting),
            ("client secret", "", flow.client_secret_setting),
        ]
        lines += ["| | declared | setting |", "|---|---|---|"]
        lines += [
            f"| {what} | {_cell(value)} | {f'`{setting}`' if setting else ''} |"
            for what, value, setting in rows
            if value or setting
        ]
        lines += [""]
    return lines


def _connector(service: descriptor.ServiceDescriptor, local: bool) -> list[str]:
    name = connector_name(service)
    options = connector_options(service)
    lines = [f"## {name}", "", options.description, ""]
    lines += [f"gRPC service `{service.full_name}`.", ""]
    if not local:
        lines += [
            "Served by a server of its own, not by the Python proxy: run it and list it in",
            '`CONNECTOR_PROXY_GRPC_TARGETS` (README, "Connectors on other gRPC servers").',
            "",
        ]
    if options.settings:
        lines += ["| setting | default | meaning |", "|---|---|---|"]
        lines += [f"| `{v.name}` | {_cell(v.default)} | {_cell(v.description)} |" for v in options.settings]
        lines += [""]
    for auth in options.auths:
        lines += _auth(name, auth)
    if options.errors:
        lines += ["Errors of every command:", "", *_errors(options.errors), ""]
    for method in service.methods:
        command = command_options(method)
        lines += [f"### `{name}/{method.name}`", "", command.description, ""]
        if command.typeahead:
            lines += ["Also answers `GET /v1/typeahead/{category}?prefix=&limit=`.", ""]
        if command.long_running:
            lines += [
                "Long-running: `/v1/do` answers `202` at once and the result is PUT to "
                '`spiff__callback_url` (README, "Long-running commands").',
                "",
            ]
        fields = [f for f in method.input_type.fields if not is_message(f, SPIFF_CONTEXT)]
        lines += _parameters(fields) if fields else ["No parameters."]
        if any(is_message(f, SPIFF_CONTEXT) for f in method.input_type.fields):
            lines += ["", "Receives spiff-arena's `spiff__*` context (task data, ids, callback URL)."]
        result = ", ".join(f"`{f.name}`" for f in method.output_type.fields) or "no fields"
        lines += ["", f"Result (`{method.output_type.name}`): {result}.", ""]
        if command.errors:
            lines += ["Errors:", "", *_errors(command.errors), ""]
    return lines


def connector_services(connectors: Sequence[Connector]) -> list[tuple[descriptor.ServiceDescriptor, bool]]:
    """Every connector service in protos/ (its generated module), with whether a Python connector
    hosts it; the test-only ones left out."""
    hosted = {c.service.full_name for c in connectors}
    found: dict[str, descriptor.ServiceDescriptor] = {c.service.full_name: c.service for c in connectors}
    # The generated packages are namespace packages (no __init__), which pkgutil does not walk.
    for directory in importlib.import_module("spiff.connector").__path__:
        for path in sorted(pathlib.Path(directory).rglob("*_pb2.py")):
            relative = path.relative_to(pathlib.Path(directory)).with_suffix("")
            name = ".".join(("spiff", "connector", *relative.parts))
            if name.startswith(_TEST_ONLY):
                continue
            for service in importlib.import_module(name).DESCRIPTOR.services_by_name.values():
                found.setdefault(service.full_name, service)
    return [(s, s.full_name in hosted) for s in found.values()]


def render(services: Sequence[tuple[descriptor.ServiceDescriptor, bool]]) -> str:
    """The reference as Markdown, one section per connector (``(service, hosted locally)``), in
    name order."""
    lines = [
        "# Connector reference",
        "",
        "Generated from the protos by `make docs` (`python -m connector_proxy.reference`); do not edit.",
        "Parameter types are spiff's (`str`, `int`, `bool`, `any`) with the JSON type accepted;",
        "`/v1/commands` and `/openapi.json` carry the same facts for programs.",
        "",
    ]
    for service, local in sorted(services, key=lambda pair: connector_name(pair[0])):
        lines += _connector(service, local)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connector_proxy.reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/connectors.md is not current")
    args = parser.parse_args(argv)
    text = render(connector_services(discover(["connectors"])))
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            sys.stderr.write(f"{TARGET.relative_to(ROOT)} is stale: run make docs\n")
            return 1
        return 0
    TARGET.parent.mkdir(exist_ok=True)
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A new connector's three files, following README "Writing a connector": its proto (one command,
``Hello``), its servicer and its test through the shim; then the generated code and the connector
reference brought up to date, so ``make test`` passes as generated."""

from __future__ import annotations

import keyword
import os
import re
import subprocess
import sys
from pathlib import Path

__all__ = [
    "MAX_NAME_LENGTH",
    "ScaffoldError",
    "check_name",
    "check_root",
    "generate",
    "pascal_case",
    "render",
    "scaffold",
]

# Longer names would make the generated import and class lines wrap; no connector needs one.
MAX_NAME_LENGTH = 20
_NAME = re.compile(r"[a-z][a-z0-9]*(_[a-z0-9]+)*")
_LINE_LENGTH = 110  # pyproject's [tool.ruff] line-length

_PROTO = """\
syntax = "proto3";

package spiff.connector.{name}.v1;

import "spiff/connector/v1/options.proto";

// The {name} connector.
service {pascal}Service {{
  option (spiff.connector.v1.connector) = {{
    name: "{name}"
    description: "Greets people (say here what the {name} connector talks to)."
  }};

  // Greets someone by name.
  rpc Hello(HelloRequest) returns (HelloResponse) {{
    option (spiff.connector.v1.command) = {{description: "Greets someone by name."}};
  }}
}}

// Parameters of {name}/Hello.
message HelloRequest {{
  // Who to greet.
  string name = 1 [(spiff.connector.v1.field) = {{
    description: "Who to greet."
    required: true
    examples_json: "\\"Ada\\""
  }}];
}}

// Result of {name}/Hello (the body of the response).
message HelloResponse {{
  // The greeting.
  string greeting = 1;
}}
"""

_MODULE = """\
\"\"\"{pascal} connector: greets people (say here what it talks to).\"\"\"

from __future__ import annotations

from typing import Any

from spiff.connector.{name}.v1 import {name}_pb2, {name}_pb2_grpc


class {pascal}Service({name}_pb2_grpc.{pascal}ServiceServicer):
{hello}
        return {name}_pb2.HelloResponse(greeting=f"Hello, {{request.name}}!")
"""

_TEST = """\
\"\"\"The {name} connector through the shim, on both execution paths (in-process and over gRPC).\"\"\"

from __future__ import annotations

import pytest

from tests.connectors.commands import Commands

pytestmark = pytest.mark.anyio

COMMANDS = Commands("{name}")


async def test_hello_greets_by_name(proxy):
    assert await COMMANDS.ok(proxy, "Hello", name="Ada") == {{"greeting": "Hello, Ada!"}}


async def test_hello_without_a_name_is_invalid_parameters(proxy):
    payload = await COMMANDS.fails(proxy, "Hello", 400, "InvalidParameters")
    assert "name" in payload["error"]["message"]
"""


class ScaffoldError(Exception):
    """The connector cannot be created: the message says why."""


def pascal_case(name: str) -> str:
    """``postgres_v2`` → ``PostgresV2``: the service and class name's stem."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _hello(name: str) -> str:
    """The ``Hello`` method's first line(s), as ruff formats them at this name's length."""
    parameters = f"self, request: {name}_pb2.HelloRequest, context: Any"
    one_line = f"    async def Hello({parameters}) -> {name}_pb2.HelloResponse:"
    if len(one_line) <= _LINE_LENGTH:
        return one_line
    return f"    async def Hello(\n        {parameters}\n    ) -> {name}_pb2.HelloResponse:"


def check_name(root: Path, name: str) -> None:
    """Refuses a name that is not a new connector's: it must be a lowercase identifier
    (``[a-z][a-z0-9_]*``, no ``__``, no trailing ``_``), not a Python keyword, at most
    :data:`MAX_NAME_LENGTH` characters, and not taken by a connector, a proto package or a test.

    Raises:
        ScaffoldError: with the reason.
    """
    if not _NAME.fullmatch(name) or keyword.iskeyword(name):
        msg = (
            f"{name!r} is not a connector name: use a lowercase identifier such as 'billing' or "
            "'crm_v2' (a-z, digits and single underscores, starting with a letter, not a Python keyword)"
        )
        raise ScaffoldError(msg)
    if len(name) > MAX_NAME_LENGTH:
        msg = f"{name!r} is longer than {MAX_NAME_LENGTH} characters"
        raise ScaffoldError(msg)
    taken = [
        path
        for path in (
            root / "connectors" / f"{name}.py",
            root / "connectors" / name,
            root / "protos" / "spiff" / "connector" / name,
            root / "tests" / "connectors" / f"test_{name}.py",
        )
        if path.exists()
    ]
    if taken:
        msg = f"{name!r} is taken: {', '.join(str(p.relative_to(root)) for p in taken)} exists"
        raise ScaffoldError(msg)


def check_root(root: Path) -> None:
    """Refuses a directory that is not the project's root.

    Raises:
        ScaffoldError: with the reason.
    """
    needed = [root / "hatch_build.py", root / "protos" / "spiff" / "connector", root / "connectors"]
    if not all(path.exists() for path in needed):
        msg = f"{root} is not the connector proxy's project root (no hatch_build.py, protos/ or connectors/)"
        raise ScaffoldError(msg)


def scaffold(root: Path, name: str) -> list[Path]:
    """Writes the proto, the connector module and its test for ``name``.

    Returns:
        The files written.

    Raises:
        ScaffoldError: ``root`` is not the project or ``name`` is not usable.
    """
    check_root(root)
    check_name(root, name)
    written = []
    for relative, text in render(name).items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


def render(name: str) -> dict[str, str]:
    """The files of the connector ``name``, by path relative to the project's root: its proto,
    its module and its test."""
    values = {"name": name, "pascal": pascal_case(name), "hello": _hello(name)}
    return {
        f"protos/spiff/connector/{name}/v1/{name}.proto": _PROTO.format(**values),
        f"connectors/{name}.py": _MODULE.format(**values),
        f"tests/connectors/test_{name}.py": _TEST.format(**values),
    }


def generate(root: Path) -> None:
    """Regenerates the Python code from the protos (``make gen``) and docs/connectors.md
    (``make docs``) in ``root``, with this interpreter.

    Raises:
        ScaffoldError: a step failed; the message holds its output.
    """
    path = os.pathsep.join([str(root), str(root / "clients" / "python"), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path.rstrip(os.pathsep)}
    for step in (["hatch_build.py"], ["-m", "connector_proxy.reference"]):
        done = subprocess.run(  # noqa: S603 - this interpreter, fixed arguments
            [sys.executable, *step], cwd=root, env=env, capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            msg = f"python {' '.join(step)} failed ({done.returncode}):\n{done.stdout}{done.stderr}"
            raise ScaffoldError(msg)

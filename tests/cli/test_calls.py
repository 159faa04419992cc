"""``connector-proxy commands`` and ``connector-proxy call`` against a real proxy process, over REST
and over its gRPC port: the answers, the exit codes and what goes to stdout and stderr."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import httpx
import pytest
import trustme

from tests.certificates import certificate_files
from tests.cli.conftest import API_KEY, RunningProxy, run, run_json
from tests.connectors.http_target import BIG, HttpTarget
from tests.ports import free_port
from tests.processes import process

pytestmark = pytest.mark.slow

PATHS = [pytest.param([], id="rest"), pytest.param(["--grpc"], id="grpc")]
GREETING = {"connector_response": "You passed the example connector: 'hi'. Have a good day!", "message": "hi"}


def test_commands_prints_a_table_of_parameters(proxy: RunningProxy):
    result = run(proxy, "commands")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["COMMAND", "PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"]
    assert any(line.split()[:4] == ["example/Example", "message", "str", "yes"] for line in lines)
    password = next(line for line in lines if " basic_auth_password " in line)
    assert "str secret" in password
    attempts = next(line for line in lines if " attempts " in line)
    assert attempts.split()[:3] == ["attempts", "int", "1"]  # no REQUIRED, the default 1
    assert any(line.startswith("example/Delay*") for line in lines)  # long-running, explained below
    assert lines[-1].startswith("* long-running")


def test_commands_filters_by_prefix(proxy: RunningProxy):
    result = run(proxy, "commands", "example/")
    assert result.exit_code == 0, result.stderr
    named = {line.split()[0] for line in result.stdout.splitlines()[1:] if not line.startswith(" ")}
    assert named == {"example/Example", "example/Delay*", "*"}


def test_commands_with_no_match_is_an_error(proxy: RunningProxy):
    result = run(proxy, "commands", "nothing/")
    assert result.exit_code == 2
    assert "command_not_found" in result.stderr


def test_commands_json_is_the_proxys_and_reflection_builds_the_same(proxy: RunningProxy):
    listed = httpx.get(
        f"{proxy.url}/v1/commands", headers={"Spiff-Connector-Proxy-Api-Key": API_KEY}, timeout=5
    )
    assert run_json(proxy, "commands", "--json") == listed.json()
    assert run_json(proxy, "commands", "--json", "--grpc") == listed.json()
    assert run_json(proxy, "commands", "example/", "--json") == [
        c for c in listed.json() if c["id"].startswith("example/")
    ]


@pytest.mark.parametrize("path", PATHS)
def test_call_prints_the_body(proxy: RunningProxy, path):
    result = run(proxy, "call", "example/Example", "message=hi", *path)
    assert (result.exit_code, result.stderr) == (0, "")
    assert json.loads(result.stdout) == GREETING


def test_call_takes_the_body_as_json_with_items_over_it(proxy: RunningProxy):
    assert (
        run_json(proxy, "call", "example/Example", "--json", '{"message": "bye"}', "message=hi") == GREETING
    )


def test_call_prints_the_envelope_on_request(proxy: RunningProxy):
    envelope = run_json(proxy, "call", "example/Example", "message=hi", "--envelope")
    assert envelope["command_response"]["body"] == GREETING
    assert (envelope["command_response_version"], envelope["error"]) == (2, None)


@pytest.mark.parametrize("path", PATHS)
def test_json_items_keep_their_types(proxy: RunningProxy, http_target: HttpTarget, path):
    """``key:=json`` sends JSON (an int stays an int, however large); ``key=text`` a string."""
    args = ["call", "http/PostRequestV2", f"url={http_target.url('/echo')}", "attempts:=1"]
    sent = f'{{"count": 3, "big": {BIG}, "flag": true, "text": "3"}}'
    body = run_json(proxy, *args, f"data:={sent}", *path)
    echoed = body if path == [] else body["body"]
    assert json.loads(echoed["body"]) == {"count": 3, "big": BIG, "flag": True, "text": "3"}


@pytest.mark.parametrize("path", PATHS)
def test_a_failing_command_exits_1_with_its_error_code(proxy: RunningProxy, http_target: HttpTarget, path):
    url = http_target.url("/missing")
    result = run(proxy, "call", "http/GetRequestV2", f"url={url}", *path)
    assert result.exit_code == 1
    assert f"Error: HttpError404: HTTP 404 from GET {url}" in result.stderr.splitlines()
    partial = json.loads(result.stdout)  # the upstream's error page, as the command's partial result
    assert (partial if path == [] else partial["body"]) == {"title": "no such item", "id": 7}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    "args",
    [
        pytest.param([], id="missing"),
        pytest.param(["message:={}"], id="wrong-type"),
    ],
)
def test_invalid_parameters_exit_2(proxy: RunningProxy, path, args):
    result = run(proxy, "call", "example/Example", *args, *path)
    assert result.exit_code == 2
    assert result.stderr.startswith(
        "Error: InvalidParameters: Invalid parameters for example/Example: message"
    )
    assert result.stdout == ""


@pytest.mark.parametrize("path", PATHS)
def test_an_unknown_command_exits_2(proxy: RunningProxy, path):
    result = run(proxy, "call", "example/Nope", *path)
    assert result.exit_code == 2
    assert "command_not_found" in result.stderr


def test_a_connectors_own_bad_request_over_grpc_exits_2(proxy: RunningProxy):
    """Over gRPC, example/Delay is an ordinary RPC: its InvalidParameters comes in the status details
    (over REST it is a job, whose error goes to the callback)."""
    result = run(proxy, "call", "example/Delay", "seconds:=-1", "--grpc")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: InvalidParameters: Invalid parameters for example/Delay: seconds")
    assert "must be between 0 and 86400" in result.stderr


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("key", [pytest.param(None, id="missing"), pytest.param("wrong-key", id="wrong")])
def test_a_refused_api_key_exits_4(proxy: RunningProxy, path, key):
    result = run(proxy, "call", "example/Example", "message=hi", *path, CONNECTOR_PROXY_API_KEY=key)
    assert result.exit_code == 4
    assert "CONNECTOR_PROXY_API_KEY" in result.stderr
    assert "wrong-key" not in result.stdout + result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["--url", "http://127.0.0.1:{port}"], id="rest"),
        pytest.param(["--grpc", "--grpc-target", "127.0.0.1:{port}", "--timeout", "1"], id="grpc"),
    ],
)
def test_an_unreachable_proxy_exits_3(proxy: RunningProxy, args):
    port = str(free_port())
    result = run(proxy, "commands", *(arg.format(port=port) for arg in args))
    assert result.exit_code == 3
    assert f"127.0.0.1:{port}" in result.stderr


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        pytest.param(["example"], "connector/Command", id="no-slash"),
        pytest.param(["example/Example", "message"], "neither key=text nor key:=json", id="no-equals"),
        pytest.param(["example/Example", "n:=nope"], "not JSON", id="bad-json"),
        pytest.param(["example/Example", "--json", "[1]"], "JSON object", id="json-not-object"),
        pytest.param(["example/Example", "--grpc", "--async"], "REST's", id="grpc-async"),
    ],
)
def test_usage_errors_exit_2_before_calling(proxy: RunningProxy, args, problem):
    result = run(proxy, "call", *args, CONNECTOR_PROXY_URL="http://127.0.0.1:9")
    assert result.exit_code == 2
    assert problem in result.stderr


def _script_env(proxy: RunningProxy) -> dict[str, str]:
    env = {**os.environ, **{k: v for k, v in proxy.env.items() if v is not None}}
    env.pop("PYTHONPATH", None)
    return env


def test_python_m_runs_the_command_line_with_its_exit_codes(proxy: RunningProxy):
    command = [sys.executable, "-m", "connector_proxy.cli", "call", "example/Example"]
    env = _script_env(proxy)
    done = subprocess.run([*command, "message=hi"], env=env, capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout) == GREETING
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert "InvalidParameters" in done.stderr


def test_the_console_script_is_installed(proxy: RunningProxy):
    script = pathlib.Path(sys.executable).parent / "connector-proxy"
    assert script.exists(), "run pip install -e '.[dev]' (make test does) to install the console script"
    env = _script_env(proxy)
    done = subprocess.run(
        [script, "call", "example/Example", "message=hi", "--grpc"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, json.loads(done.stdout)) == (0, GREETING)
    version = subprocess.run([script, "--version"], capture_output=True, text=True, check=True)
    assert version.stdout.startswith("connector-proxy, version ")
    helped = subprocess.run([script, "call", "--help"], capture_output=True, text=True, check=True)
    assert "Exit codes:" in helped.stdout
    assert "key:=json" in helped.stdout


def test_a_grpcs_target_speaks_tls(tmp_path):
    """``grpcs://host:port`` verifies the server against the system's roots, or those in grpc's own
    ``GRPC_DEFAULT_SSL_ROOTS_FILE_PATH``."""
    files = certificate_files(tmp_path, trustme.CA(), trustme.CA())
    grpc_port = free_port()
    env = {
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
        "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE": files.server.cert,
        "CONNECTOR_PROXY_GRPC_TLS_KEY_FILE": files.server.key,
    }
    with process(["-m", "connector_proxy", "--grpc-only"], env, tmp_path / "grpc.log"):
        command = [sys.executable, "-m", "connector_proxy.cli", "call", "example/Example", "message=hi"]
        target = ["--grpc", "--grpc-target", f"grpcs://localhost:{grpc_port}", "--timeout", "20"]
        client_env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": files.ca}
        client_env.pop("CONNECTOR_PROXY_API_KEY", None)
        done = subprocess.run(
            [*command, *target], env=client_env, capture_output=True, text=True, check=False
        )
        assert (done.returncode, done.stderr) == (0, "")
        assert json.loads(done.stdout) == GREETING

"""The fuzzer's run: schemathesis against /openapi.json of a real proxy, every operation.

Run by ``test_openapi_fuzz.py`` inside a network namespace of its own, where only loopback
exists: whatever URL, host or endpoint the generated parameters name, nothing leaves the machine
(the connectors that call out fail to connect, and answer their documented upstream failures).
It refuses to run anywhere else.

Checks, on every operation, in both generation modes:

* positive data (valid by the schema) is never refused with 400 ``InvalidParameters`` or
  ``InvalidJson``: the schema states every constraint the proxy enforces on a parameter;
* negative data (invalid by the schema) is refused with 400: the schema states every coercion
  the proxy makes;
* no 5xx other than an upstream failure the command documents (502/503/504 with its error_code);
* every answer matches its documented shape (status, content type, envelope schema).
"""

from __future__ import annotations

import fcntl
import re
import socket
import struct
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.config import SchemathesisConfig
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from rest_shim._status import HTTP_STATUS
from server._registry import discover
from server.schema import command_options, connector_options
from tests.ports import free_port
from tests.processes import process, wait_for_http

# Bounded for CI: a fixed derivation of the examples, a fixed number per operation and mode.
EXAMPLES = 25
# The proxy's own failures a call may meet without any upstream: out of time, out of capacity.
PROXY_FAILURES = {"DeadlineExceeded": 504, "ConnectorBusy": 503, "ProxyBusy": 503}
# Refusals the schema does not state, by connector: checks of a value's meaning that only the
# command makes (a URL or connection string that must parse, an email address, a data URL, a
# credential's shape, a JSON value that must be an object, parameters that need each other).
# Positive data refused for these fields alone (each named in the message) is not a finding.
SEMANTIC: dict[str, set[str]] = {
    "http": {"url", "oauth2_token_set"},  # a token set is JSON text the schema cannot describe
    "rand": {"min"},  # min must not exceed max: a relation between two fields
    # OpenAI's shapes of messages, tools and formats; a URL; a key fit for a header; a temperature
    # of at most 2 (a number field can declare only a minimum).
    "ai": {
        "messages",
        "tools",
        "tool_choice",
        "response_format",
        "extra_body",
        "api_base",
        "api_key",
        "temperature",
    },
    "mysql": {"database_connection_str"},
    "postgres_v2": {"database_connection_str"},
    "aws": {
        "aws_access_key_id",
        "aws_secret_access_key",
        "aws_session_token",
        "region",
        "endpoint_url",
        "item_data",
        "file_data",
        "exclusive_start_key",
        "partition_key",
        "sort_key",
    },
    "slack": {"token", "blocks", "api_url"},
    "artifacts": {"attachments", "storage"},  # data URLs of PDFs or images; a bucket or s3:// URL
    "smtp": {
        "smtp_host",
        "email_from",
        "email_to",
        "email_cc",
        "email_bcc",
        "email_reply_to",
        "email_subject",
        "attachments",
        "smtp_tls_ca_cert",
        "smtp_ssl",
    },
}

CONFIG = SchemathesisConfig.from_dict(
    {
        "generation": {
            "mode": "all",
            "max-examples": EXAMPLES,
            "deterministic": True,
            "database": "none",
            "no-shrink": True,
        },
        "phases": {
            "examples": {"enabled": True},
            "coverage": {"enabled": False},
            "fuzzing": {"enabled": True},
            "stateful": {"enabled": False},
        },
        "checks": {"negative_data_rejection": {"expected-statuses": ["400"]}},
    }
)


def _bring_loopback_up() -> None:
    """A new network namespace has only ``lo``, and it is down."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


@pytest.fixture(scope="session")
def proxy_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    interfaces = [name for _, name in socket.if_nameindex()]
    if interfaces != ["lo"]:
        pytest.fail(f"refusing to fuzz with network interfaces {interfaces}: run test_openapi_fuzz.py")
    _bring_loopback_up()
    port = free_port()
    log = tmp_path_factory.mktemp("fuzz") / "proxy.log"
    env = {
        "CONNECTOR_PROXY_HOST": "127.0.0.1",
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(free_port()),
        "CONNECTOR_PROXY_COMMAND_TIMEOUT": "10",
        "CONNECTOR_PROXY_ACCESS_LOG": "false",
        "CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT": "1",
        "CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT": "1",
        # AWS without any configuration of the machine's, and without retries or the metadata service.
        "AWS_ACCESS_KEY_ID": "fuzz",
        "AWS_SECRET_ACCESS_KEY": "fuzz",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_MAX_ATTEMPTS": "1",
    }
    base = f"http://127.0.0.1:{port}"
    with process(["-m", "connector_proxy"], env, log) as proc:
        wait_for_http(base, proc, log)
        yield base
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text, text


@pytest.fixture(scope="session")
def api_schema(proxy_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{proxy_url}/openapi.json", config=CONFIG)


def _documented_failures() -> dict[str, list[tuple[re.Pattern[str], int]]]:
    """Per command path, the error_codes its connector and it document, with their HTTP status."""
    found: dict[str, list[tuple[re.Pattern[str], int]]] = {}
    for connector in discover(["connectors"]):
        shared = list(connector_options(connector.service).errors)
        for command in connector.commands:
            documented = [*shared, *command_options(command.method).errors]
            patterns = []
            for error in documented:
                # No gRPC code: the command's code varies (it follows the upstream's answer).
                status = HTTP_STATUS[grpc.StatusCode[error.grpc_code]] if error.grpc_code else 0
                for name in error.error_code.split(","):
                    name = name.strip().rstrip(".")
                    regex = re.sub(r"\\<[^>]*\\>", ".+", re.escape(name))
                    patterns.append((re.compile(regex), status))
            found[f"/v1/do/{command.id}"] = patterns
    return found


DOCUMENTED = _documented_failures()


def _error_code(response: Any) -> str | None:
    try:
        error = response.json().get("error")
    except ValueError:
        return None
    return error.get("error_code") if isinstance(error, dict) else None


@schemathesis.check
def only_documented_upstream_failures(ctx: Any, response: Any, case: Any) -> None:
    """No 5xx but 502/503/504 with an error_code the command (or the proxy) documents for it."""
    status = response.status_code
    if status < 500:
        return
    code = _error_code(response)
    documented = any(
        pattern.fullmatch(code or "") and expected in (status, 0)
        for pattern, expected in DOCUMENTED.get(case.operation.path, [])
    )
    if status in (502, 503, 504) and (documented or PROXY_FAILURES.get(code or "") == status):
        return
    msg = f"undocumented server error {status} {code}: {response.text[:500]}"
    raise AssertionError(msg)


@schemathesis.check
def valid_data_is_not_refused(ctx: Any, response: Any, case: Any) -> None:
    """Positive data never gets 400 InvalidParameters or InvalidJson (beyond SEMANTIC's fields)."""
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 400:
        return
    code = _error_code(response)
    if code not in ("InvalidParameters", "InvalidJson"):
        return
    message = response.json()["error"]["message"]
    semantic = SEMANTIC.get(case.operation.path.split("/")[3], set())
    if semantic and all(_names_only(message, semantic)):
        return
    msg = f"valid by the schema, refused with {code}: {message}"
    raise AssertionError(msg)


def _names_only(message: str, fields: set[str]) -> Iterator[bool]:
    for part in message.split("; "):
        yield any(field in part for field in fields)


# One test per operation and mode; the operations are the commands the proxy serves.
OPERATIONS = sorted(DOCUMENTED)
MODES = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
CHECKS = [
    only_documented_upstream_failures,
    valid_data_is_not_refused,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
    content_type_conformance,
]


@pytest.mark.parametrize("mode", [pytest.param(m, id=m.value) for m in MODES])
@pytest.mark.parametrize("path", [pytest.param(p, id=p.removeprefix("/v1/do/")) for p in OPERATIONS])
def test_every_operation_keeps_its_schema(api_schema, proxy_url, path, mode):
    operation = api_schema[path]["POST"]

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(base_url=proxy_url, timeout=30)
        case.validate_response(response, checks=CHECKS)

    check()

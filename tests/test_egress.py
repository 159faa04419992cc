"""The egress policy: its rules and settings, and every connector kind refusing a denied address
through the shim (both paths), before any connection is made.

No test connects to a non-loopback address: denied addresses are refused before connecting, and
allow-list tests deny loopback and show that a loopback server gets no connection.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from spiff.connector.http.v1 import http_pb2
from spiff.connector.smtp.v1 import smtp_pb2

from connectors._egress import EgressResolver, egress_middleware
from connectors.aws import AwsService
from connectors.http import HttpService
from connectors.mysql._connections import named_tls_context
from connectors.smtp import SmtpService
from server import errors, json_values
from server.egress import EgressDenied, EgressPolicy
from server.invocation import LocalContext
from server.settings import Settings
from tests.connectors.commands import Commands
from tests.connectors.http_target import HttpTarget
from tests.connectors.mysql_server import ADMIN_URI
from tests.connectors.smtp_target import SmtpTarget

pytestmark = pytest.mark.anyio

METADATA_MESSAGE = (
    "169.254.169.254 is in the denied range 169.254.0.0/16 (default: link-local and cloud metadata)"
)
LOOPBACK = "127.0.0.0/8,::1/128"


class CountingServer:
    """A loopback TCP port that counts the connections it accepts (and closes them)."""

    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.05)
        self.port: int = self._sock.getsockname()[1]
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            conn.close()

    def __enter__(self) -> CountingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sock.close()


@pytest.fixture
def counting() -> Iterator[CountingServer]:
    with CountingServer() as server:
        yield server


@pytest.fixture
def http_target() -> Iterator[HttpTarget]:
    with HttpTarget() as target:
        yield target


@pytest.fixture
def deny_loopback(monkeypatch) -> None:
    """Loopback denied (set before the connectors are made: request it before ``proxy``)."""
    monkeypatch.setenv("CONNECTOR_PROXY_EGRESS_DENY_CIDRS", LOOPBACK)


def denial(payload: dict[str, Any]) -> str:
    assert payload["error"]["error_code"] == "EgressDenied", payload
    message: str = payload["error"]["message"]
    return message


# --- the rules --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rule"),
    [
        pytest.param("169.254.169.254", "169.254.0.0/16", id="metadata"),
        pytest.param("169.254.170.2", "169.254.0.0/16", id="ecs-task-metadata"),
        pytest.param("::ffff:169.254.169.254", "169.254.0.0/16", id="ipv4-mapped"),
        pytest.param("::ffff:a9fe:a9fe", "169.254.0.0/16", id="ipv4-mapped-hex"),
        pytest.param("64:ff9b::a9fe:a9fe", "169.254.0.0/16", id="nat64"),
        pytest.param("2002:a9fe:a9fe::1", "169.254.0.0/16", id="6to4"),
        pytest.param("fe80::1", "fe80::/10", id="ipv6-link-local"),
        pytest.param("fd00:ec2::254", "fd00:ec2::254/128", id="aws-ipv6-metadata"),
        pytest.param("100.100.100.200", "100.100.100.200/32", id="alibaba-metadata"),
    ],
)
def test_default_denies_link_local_and_metadata(address, rule):
    reason = EgressPolicy().address_denial("host.test", address)
    assert reason is not None
    assert f"in the denied range {rule} (default: " in reason


@pytest.mark.parametrize("address", ["127.0.0.1", "::1", "10.1.2.3", "192.168.0.1", "93.184.216.34"])
def test_default_allows_everything_else(address):
    assert EgressPolicy().address_denial("host.test", address) is None


def test_metadata_host_names_are_denied_before_any_lookup():
    looked_up: list[str] = []

    async def lookup(host: str, port: int) -> Sequence[str]:
        looked_up.append(host)
        return ["127.0.0.1"]

    policy = EgressPolicy.from_env({}, lookup=lookup)
    for name in ("metadata.google.internal", "METADATA.google.internal."):
        with pytest.raises(EgressDenied) as caught:
            policy.check_host(name, 80, connector="http")
        assert "is a denied host name (default: cloud metadata" in caught.value.message
    assert looked_up == []


def test_wildcard_host_names_match_names_below_only():
    policy = EgressPolicy.from_env({"CONNECTOR_PROXY_EGRESS_DENY_HOSTS": "*.corp.test, exact.test"})
    assert policy.host_denial("a.corp.test") is not None
    assert policy.host_denial("b.a.CORP.test.") is not None
    assert policy.host_denial("exact.test") is not None
    for allowed in ("corp.test", "notcorp.test", "a.exact.test", "exact.test.evil"):
        assert policy.host_denial(allowed) is None, allowed
    reason = policy.host_denial("a.corp.test")
    assert reason == "a.corp.test is a denied host name (CONNECTOR_PROXY_EGRESS_DENY_HOSTS: *.corp.test)"


def test_allow_lists_admit_only_what_they_name_and_deny_wins():
    policy = EgressPolicy.from_env(
        {
            "CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS": "10.0.0.0/8",
            "CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS": "*.api.test",
            "CONNECTOR_PROXY_EGRESS_DENY_CIDRS": "10.9.0.0/16",
        }
    )
    assert policy.address_denial("db.test", "10.1.2.3") is None
    assert policy.address_denial("db.test", "::ffff:10.1.2.3") is None
    assert policy.address_denial("x.api.test", "127.0.0.1") is None  # by name
    assert policy.address_denial("db.test", "127.0.0.1") == (
        "127.0.0.1 is not in CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS and db.test is not in "
        "CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS"
    )
    assert "denied range 10.9.0.0/16 (CONNECTOR_PROXY_EGRESS_DENY_CIDRS)" in (
        policy.address_denial("x.api.test", "10.9.1.1") or ""
    )
    assert "denied range 169.254.0.0/16" in (policy.address_denial("x.api.test", "169.254.169.254") or "")


def test_denied_addresses_of_a_name_are_skipped_and_all_denied_fails():
    policy = EgressPolicy()
    assert policy.permitted("h.test", 80, ["169.254.169.254", "127.0.0.1"], connector="http") == ["127.0.0.1"]
    with pytest.raises(EgressDenied) as caught:
        policy.permitted("h.test", 80, ["169.254.169.254", "fe80::1"], connector="http")
    assert caught.value.code == errors.PermissionDenied.code
    assert caught.value.error_code == "EgressDenied"
    assert caught.value.message == (
        f"The egress policy does not allow connecting to h.test:80: {METADATA_MESSAGE}; "
        "fe80::1 is in the denied range fe80::/10 (default: link-local)."
    )


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        pytest.param("CONNECTOR_PROXY_EGRESS_DENY_CIDRS", "10.0.0.1/8", "has host bits set", id="host-bits"),
        pytest.param(
            "CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS", "10.0.0.0/33", "must list CIDR ranges", id="prefix"
        ),
        pytest.param("CONNECTOR_PROXY_EGRESS_DENY_CIDRS", "intranet", "must list CIDR ranges", id="name"),
        pytest.param(
            "CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS", "api.*.test", "must list host names", id="inner-star"
        ),
        pytest.param("CONNECTOR_PROXY_EGRESS_DENY_HOSTS", "*", "must list host names", id="bare-star"),
        pytest.param(
            "CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS",
            "10.0.0.1",
            "put it in CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS",
            id="address-as-host",
        ),
    ],
)
def test_malformed_settings_stop_start_up(name, value, expected):
    with pytest.raises(ValueError, match=name) as caught:
        Settings.from_env({name: value})
    assert expected in str(caught.value)


def test_malformed_aws_endpoint_list_stops_start_up(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", "http://ok.test,ftp://user:pw@files.test")
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_AWS_ENDPOINT_URLS must list http") as caught:
        AwsService()
    assert "pw" not in str(caught.value)


def test_settings_read_the_policy():
    settings = Settings.from_env({"CONNECTOR_PROXY_EGRESS_DENY_CIDRS": "10.0.0.0/8"})
    assert settings.egress.address_denial("h.test", "10.0.0.1") is not None
    assert Settings.from_env({}).egress.address_denial("h.test", "10.0.0.1") is None


# --- every connector kind, through the shim ---------------------------------------------------------


async def test_http_refuses_metadata_addresses_and_names(proxy):
    http = Commands("http")
    payload = await http.fails(
        proxy, "GetRequestV2", 403, "EgressDenied", url="http://169.254.169.254/latest/"
    )
    assert METADATA_MESSAGE in denial(payload)
    assert "169.254.169.254:80" in denial(payload)
    assert payload["spiff__logs"][-1].startswith("-> refused by the egress policy")
    payload = await http.fails(
        proxy, "GetRequestV2", 403, "EgressDenied", url="http://[::ffff:169.254.169.254]/"
    )
    assert "in the denied range 169.254.0.0/16" in denial(payload)
    payload = await http.fails(
        proxy, "GetRequestV2", 403, "EgressDenied", url="http://metadata.google.internal/computeMetadata/v1/"
    )
    assert "metadata.google.internal is a denied host name" in denial(payload)


async def test_http_refuses_a_redirect_to_a_denied_address(proxy, monkeypatch):
    """A loopback server redirects to the metadata address: the redirect is not followed."""

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "http://169.254.169.254/latest/"})

    app = web.Application()
    app.router.add_get("/go", redirect)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        payload = await Commands("http").fails(
            proxy, "GetRequestV2", 403, "EgressDenied", url=f"http://127.0.0.1:{port}/go"
        )
        assert METADATA_MESSAGE in denial(payload)
    finally:
        await runner.cleanup()


async def test_slack_refuses_a_metadata_api_url(proxy):
    payload = await Commands("slack").fails(
        proxy,
        "PostMessage",
        403,
        "EgressDenied",
        token="xoxb-secret-token",
        channel="C1",
        message="hi",
        api_url="http://169.254.169.254/api/",
    )
    assert METADATA_MESSAGE in denial(payload)
    assert "xoxb-secret-token" not in str(payload)


async def test_smtp_refuses_a_metadata_host(proxy):
    payload = await Commands("smtp").fails(
        proxy,
        "SendEmail",
        403,
        "EgressDenied",
        smtp_host="169.254.169.254",
        smtp_port=25,
        smtp_user="u",
        smtp_password="smtp-secret",
        email_subject="x",
        email_body="x",
        email_to="ann@example.com",
        email_from="noreply@example.com",
    )
    assert METADATA_MESSAGE in denial(payload)
    assert "smtp-secret" not in str(payload)


@pytest.mark.parametrize(
    ("connector", "conninfo"),
    [
        pytest.param("postgres_v2", "host=169.254.169.254 dbname=x user=x password=pg-secret", id="postgres"),
        pytest.param("postgres_v2", "postgresql://x:pg-secret@[fe80::1]:5432/x", id="postgres-uri"),
        pytest.param("mysql", "mysql://root:my-secret@169.254.169.254:3306/x", id="mysql"),
    ],
)
async def test_sql_refuses_a_metadata_host(proxy, connector, conninfo):
    payload = await Commands(connector).fails(
        proxy, "DoSQL", 403, "EgressDenied", database_connection_str=conninfo, schema={"sql": "SELECT 1"}
    )
    assert "in the denied range" in denial(payload)
    assert "secret" not in str(payload)


async def test_aws_refuses_unlisted_per_call_endpoints_and_denied_hosts(proxy, monkeypatch):
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    per_call = {"region": "us-east-1", "aws_access_key_id": "AKIDX", "aws_secret_access_key": "aws-secret"}
    aws = Commands("aws")
    payload = await aws.fails(
        proxy, "ScanDynamoTable", 403, "EgressDenied", table_name="t", endpoint_url="http://169.254.169.254"
    )
    assert "endpoint_url http://169.254.169.254:80 is not in CONNECTOR_PROXY_AWS_ENDPOINT_URLS" in denial(
        payload
    )
    # Listed by the operator, the endpoint still goes through the address check before sending.
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", "http://169.254.169.254")
    payload = await aws.fails(
        proxy,
        "ScanDynamoTable",
        403,
        "EgressDenied",
        table_name="t",
        endpoint_url="http://169.254.169.254",
        **per_call,
    )
    assert METADATA_MESSAGE in denial(payload)
    payload = await aws.fails(
        proxy,
        "GetFileData",
        403,
        "EgressDenied",
        bucket="b",
        object_name="k",
        endpoint_url="http://169.254.169.254/",
        **per_call,
    )
    assert "aws-secret" not in str(payload)


# --- names resolved, then checked -------------------------------------------------------------------


async def test_a_name_resolving_to_a_denied_address_is_refused(deny_loopback, proxy, counting):
    payload = await Commands("http").fails(
        proxy, "GetRequestV2", 403, "EgressDenied", url=f"http://localhost:{counting.port}/"
    )
    assert "(CONNECTOR_PROXY_EGRESS_DENY_CIDRS)" in denial(payload)
    payload = await Commands("slack").fails(
        proxy,
        "PostMessage",
        403,
        "EgressDenied",
        token="xoxb-1",
        channel="C1",
        message="hi",
        api_url=f"http://localhost:{counting.port}/api/",
    )
    assert "(CONNECTOR_PROXY_EGRESS_DENY_CIDRS)" in denial(payload)
    payload = await Commands("smtp").fails(
        proxy,
        "SendEmail",
        403,
        "EgressDenied",
        smtp_host="localhost",
        smtp_port=counting.port,
        email_subject="x",
        email_body="x",
        email_to="ann@example.com",
        email_from="noreply@example.com",
    )
    assert f"localhost:{counting.port}" in denial(payload)
    for connector, conninfo in (
        ("postgres_v2", "host=localhost port=5432 user=postgres dbname=postgres"),
        ("mysql", ADMIN_URI.replace("127.0.0.1", "localhost")),
    ):
        payload = await Commands(connector).fails(
            proxy, "DoSQL", 403, "EgressDenied", database_connection_str=conninfo, schema={"sql": "SELECT 1"}
        )
        assert "(CONNECTOR_PROXY_EGRESS_DENY_CIDRS)" in denial(payload)
    await asyncio.sleep(0.1)
    assert counting.accepted == 0


async def test_an_allow_list_admits_only_what_it_names(monkeypatch, http_target):
    monkeypatch.setenv("CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS", "10.0.0.0/8")
    monkeypatch.setenv("CONNECTOR_PROXY_EGRESS_ALLOW_HOSTS", "localhost")
    service = HttpService()  # reads the variables, as at start-up

    def request_for(url: str) -> http_pb2.GetRequestV2Request:
        return http_pb2.GetRequestV2Request(url=url)

    try:
        context = LocalContext(time.monotonic() + 10)
        port = http_target.base_url.rsplit(":", 1)[1]
        response = await service.GetRequestV2(request_for(f"http://localhost:{port}/flaky/allow"), context)
        assert response.http_status == 200
        assert http_target.hits("allow") == 1
        with pytest.raises(EgressDenied) as caught:
            await service.GetRequestV2(request_for(f"http://127.0.0.1:{port}/flaky/allow"), context)
        assert "127.0.0.1 is not in CONNECTOR_PROXY_EGRESS_ALLOW_CIDRS" in caught.value.message
        assert http_target.hits("allow") == 1
    finally:
        await service.aclose()


async def test_the_log_line_names_host_and_rule_but_no_secret(proxy, caplog):
    caplog.set_level(logging.WARNING, logger="server.egress")
    url = "http://alice:pw-S3cr3t@169.254.169.254:8080/latest/meta-data/iam?token=q-S3cr3t"
    payload = await Commands("http").fails(proxy, "GetRequestV2", 403, "EgressDenied", url=url)
    records = [r for r in caplog.records if r.name == "server.egress"]
    assert records
    assert all(r.levelno == logging.WARNING for r in records)
    text = records[-1].getMessage()
    assert text == f"egress denied: http may not connect to 169.254.169.254:8080: {METADATA_MESSAGE}"
    for secret in ("alice", "S3cr3t", "meta-data", "token"):
        assert secret not in caplog.text
        assert secret not in denial(payload)


# --- DNS rebinding: the checked address is the one connected to ----------------------------------------


class RebindingResolver(AbstractResolver):
    """Answers loopback the first time and the metadata address afterwards, counting lookups."""

    def __init__(self) -> None:
        self.lookups = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups += 1
        address = "127.0.0.1" if self.lookups == 1 else "169.254.169.254"
        return [
            ResolveResult(hostname=host, host=address, port=port, family=socket.AF_INET, proto=0, flags=0)
        ]

    async def close(self) -> None:
        pass


async def test_aiohttp_connects_to_the_address_it_checked(http_target):
    inner = RebindingResolver()
    policy = EgressPolicy()
    port = int(http_target.base_url.rsplit(":", 1)[1])
    # No DNS cache and no kept connections: every request makes a connection, resolving anew.
    connector = aiohttp.TCPConnector(
        resolver=EgressResolver(policy, "http", inner), use_dns_cache=False, force_close=True
    )
    async with aiohttp.ClientSession(
        connector=connector, middlewares=(egress_middleware(policy, "http"),)
    ) as session:
        async with session.get(f"http://rebind.test:{port}/flaky/rebind") as response:
            assert response.status == 200
        assert inner.lookups == 1  # resolved once; the connection went to the checked answer
        assert http_target.hits("rebind") == 1
        with pytest.raises(EgressDenied):  # the next connection's answer is checked too
            async with session.get(f"http://rebind.test:{port}/flaky/rebind"):
                pass
        assert inner.lookups == 2
        assert http_target.hits("rebind") == 1


async def test_a_name_no_resolver_can_encode_fails_as_a_lookup_would():
    """getaddrinfo raises UnicodeError for an empty or over-long label, which aiohttp does not
    expect; the resolver makes it the OSError of a failed lookup."""
    inner = RebindingResolver()
    resolver = EgressResolver(EgressPolicy(), "http", inner)
    for name in ("a..example", "a" * 64 + ".example"):
        with pytest.raises(OSError, match="is not a valid host name"):
            await resolver.resolve(name, 80)
    assert inner.lookups == 0


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


async def test_smtp_resolves_once_and_keeps_the_tls_server_name(tmp_path):
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    answers = [["127.0.0.1"], ["169.254.169.254"]]
    lookups: list[str] = []

    async def rebinding(host: str, port: int) -> Sequence[str]:
        lookups.append(host)
        return answers[min(len(lookups), 2) - 1]

    service = SmtpService(
        ca_file=str(ca_file), local_hostname="client.test", egress=EgressPolicy.from_env({}, lookup=rebinding)
    )
    with SmtpTarget(implicit=_server_context(ca, "mail.example.test")) as target:
        request = smtp_pb2.SendEmailRequest(
            smtp_host="mail.example.test",
            smtp_port=target.port,
            smtp_ssl=True,
            email_subject="rebinding",
            email_body="x",
            email_to=json_values.dump("ann@example.com"),
            email_from="noreply@example.com",
        )
        context = LocalContext(time.monotonic() + 10)
        response = await service.SendEmail(request, context)
        assert response.accepted == ["ann@example.com"]
        assert lookups == ["mail.example.test"]  # one lookup; the certificate matched the name
        with pytest.raises(EgressDenied):
            await service.SendEmail(request, context)
        assert len(target.find("rebinding")) == 1


async def test_mysql_tls_verifies_the_name_while_connecting_to_the_address():
    """aiomysql gives the address it connects to as the TLS server name; the context checks the
    host name instead."""
    ca = trustme.CA()
    server_context = _server_context(ca, "db.example.test")

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        context = named_tls_context("db.example.test")
        ca.configure_trust(context)
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname="127.0.0.1")
        writer.close()
        wrong = named_tls_context("other.example.test")
        ca.configure_trust(wrong)
        with pytest.raises(ssl.SSLCertVerificationError):
            await asyncio.open_connection("127.0.0.1", port, ssl=wrong, server_hostname="127.0.0.1")
    finally:
        server.close()
        await server.wait_closed()

"""The smtp connector against real aiosmtpd servers on 127.0.0.1, through the shim on both paths.

Certificates come from trustme: ``ca`` is trusted through CONNECTOR_PROXY_SMTP_CA_FILE (set for
every test, before the connectors are built), ``other_ca`` is trusted by nobody.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import trustme
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.smtp.v1 import smtp_pb2, smtp_pb2_grpc

from connectors.smtp import SmtpService
from connectors.smtp._errors import ENV_CA_FILE
from server import errors, json_values
from server.invocation import LocalContext
from tests.connectors.smtp_target import (
    LATER,
    PASSWORD,
    REFUSED,
    USER,
    Delivery,
    SilentServer,
    SmtpTarget,
)
from tests.ports import free_port

pytestmark = pytest.mark.anyio

PDF = b"%PDF-1.4\n\x00\x01\x02\xff binary \r\n bytes"
PNG = bytes(range(256))


def _server_context(ca: trustme.CA, *names: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*names).configure_cert(context)
    return context


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def other_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
def ca_file(ca, tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("smtp") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _trust_ca(monkeypatch, ca_file) -> None:
    monkeypatch.setenv(ENV_CA_FILE, ca_file)


@pytest.fixture(scope="module")
def plain() -> Iterator[SmtpTarget]:
    """No TLS; AUTH offered anyway (as some internal relays do)."""
    with SmtpTarget(auth=True, auth_require_tls=False) as target:
        yield target


@pytest.fixture(scope="module")
def starttls(ca) -> Iterator[SmtpTarget]:
    """STARTTLS with a trusted certificate; AUTH only after STARTTLS."""
    with SmtpTarget(starttls=_server_context(ca, "127.0.0.1"), auth=True) as target:
        yield target


@pytest.fixture(scope="module")
def smtps(ca) -> Iterator[SmtpTarget]:
    with SmtpTarget(implicit=_server_context(ca, "127.0.0.1"), auth=True, auth_require_tls=False) as target:
        yield target


@pytest.fixture(scope="module")
def untrusted(other_ca) -> Iterator[tuple[SmtpTarget, SmtpTarget]]:
    """A STARTTLS and an SMTPS server whose certificates come from a CA nobody trusts."""
    with (
        SmtpTarget(starttls=_server_context(other_ca, "127.0.0.1")) as with_starttls,
        SmtpTarget(implicit=_server_context(other_ca, "127.0.0.1")) as with_smtps,
    ):
        yield with_starttls, with_smtps


@pytest.fixture(scope="module")
def wrong_name(ca) -> Iterator[SmtpTarget]:
    """SMTPS with a trusted certificate for another host name."""
    with SmtpTarget(implicit=_server_context(ca, "mail.example.test")) as target:
        yield target


def params(target: SmtpTarget, **extra: Any) -> dict[str, Any]:
    """A complete SendEmail call to ``target`` with a fresh subject."""
    return {
        "smtp_host": "127.0.0.1",
        "smtp_port": target.port,
        "email_subject": f"Test {uuid.uuid4().hex}",
        "email_body": "Hello from the workflow.",
        "email_to": "ann@example.com",
        "email_from": "noreply@example.com",
        **extra,
    }


async def call(client: httpx.AsyncClient, **body: Any) -> tuple[int, dict[str, Any]]:
    response = await client.post("/v1/do/smtp/SendEmail", json=body)
    payload: dict[str, Any] = response.json()
    assert payload["command_response_version"] == 2
    assert all(isinstance(line, str) for line in payload["spiff__logs"])
    return response.status_code, payload


async def send(
    client: httpx.AsyncClient, target: SmtpTarget, **extra: Any
) -> tuple[dict[str, Any], Delivery]:
    """A call that must succeed; its result body and the one delivery it made."""
    body = params(target, **extra)
    status, payload = await call(client, **body)
    assert (status, payload["error"]) == (200, None), payload
    deliveries = target.find(body["email_subject"])
    assert len(deliveries) == 1
    result: dict[str, Any] = payload["command_response"]["body"]
    return result, deliveries[0]


async def fail(client: httpx.AsyncClient, target_port: int, **extra: Any) -> tuple[int, dict[str, Any]]:
    body = {
        "smtp_host": "127.0.0.1",
        "smtp_port": target_port,
        "email_subject": "Never delivered",
        "email_body": "x",
        "email_to": "ann@example.com",
        "email_from": "noreply@example.com",
        **extra,
    }
    status, payload = await call(client, **body)
    assert payload["error"] is not None, payload
    return status, payload


def text(part: Any) -> str:
    """A text part's content with the wire's CRLF line ends as LF."""
    content: str = part.get_content()
    return content.replace("\r\n", "\n")


def data_url(mime: str, content: bytes, name: str | None = None) -> str:
    named = f";name={urllib.parse.quote(name)}" if name is not None else ""
    return f"data:{mime}{named};base64,{base64.b64encode(content).decode()}"


async def test_plain_send_with_every_part(proxy, plain):
    result, delivery = await send(
        proxy,
        plain,
        email_subject=f"Grüße {uuid.uuid4().hex}",
        email_body="Plain text, with ümlauts.\n",
        email_body_html="<p>HTML <b>part</b></p>",
        email_to='"Lee, Ann" <ann@example.com>; bob@example.com',
        email_from="Workflow Bot <noreply@example.com>",
        cc=["Carol <carol@example.com>"],
        bcc="secret-audit@example.com, BOB@example.com",
        reply_to="support@example.com",
        attachments=[
            data_url("application/pdf", PDF, "Bericht März.pdf"),
            data_url("image/png", PNG),
            "data:,plain%20text",
        ],
    )
    recipients = ["ann@example.com", "bob@example.com", "carol@example.com", "secret-audit@example.com"]
    assert delivery.mail_from == "noreply@example.com"
    assert delivery.rcpt_tos == recipients
    assert (delivery.tls, delivery.login) == (False, None)
    msg = delivery.message
    assert msg["From"] == "Workflow Bot <noreply@example.com>"
    assert msg["To"] == '"Lee, Ann" <ann@example.com>, bob@example.com'
    assert msg["Cc"] == "Carol <carol@example.com>"
    assert msg["Reply-To"] == "support@example.com"
    assert msg["Bcc"] is None
    assert b"secret-audit" not in delivery.content
    assert msg["Date"]
    assert all(byte < 128 for byte in delivery.content)  # 7-bit clean: no 8BITMIME needed
    assert text(msg.get_body(("plain",))) == "Plain text, with ümlauts.\n"
    assert text(msg.get_body(("html",))) == "<p>HTML <b>part</b></p>\n"
    files = [
        (part.get_filename(), part.get_content_type(), part.get_payload(decode=True))
        for part in msg.iter_attachments()
    ]
    assert files == [
        ("Bericht März.pdf", "application/pdf", PDF),
        ("attachment-2.png", "image/png", PNG),
        ("attachment-3.txt", "text/plain", b"plain text"),
    ]
    assert result == {
        "message_id": msg["Message-ID"],
        "accepted": recipients,
        "refused": {},
        "server_reply": result["server_reply"],
    }
    assert re.fullmatch(r"<.+@example\.com>", result["message_id"])
    assert re.fullmatch(r"250 2\.0\.0 Ok: queued as Q\d+", result["server_reply"])


async def test_minimal_send_logs_each_step(proxy, plain):
    body = params(plain)
    status, payload = await call(proxy, **body)
    assert status == 200
    assert payload["command_response"]["http_status"] == 200
    msg = plain.find(body["email_subject"])[0].message
    assert msg.get_content_type() == "text/plain"
    assert text(msg) == "Hello from the workflow.\n"
    logs = payload["spiff__logs"]
    assert logs[0] == f"Connecting to 127.0.0.1:{plain.port} (plain SMTP)."
    assert re.fullmatch(
        r"Sending <.+> from noreply@example.com to 1 recipient\(s\) \(1 To, 0 Cc, 0 Bcc\), "
        r"0 attachment\(s\), \d+ bytes\.",
        logs[1],
    )
    assert re.fullmatch(r"-> accepted for 1 of 1 recipient\(s\) in \d+ ms\.", logs[2])
    assert len(logs) == 3


async def test_starttls_without_credentials(proxy, starttls):
    """smtp_starttls means STARTTLS, logged in or not (the incumbent only did it with a login)."""
    _, delivery = await send(proxy, starttls, smtp_starttls=True)
    assert (delivery.tls, delivery.login) == (True, None)


async def test_starttls_with_login(proxy, starttls):
    body = params(starttls, smtp_starttls=True, smtp_user=USER, smtp_password=PASSWORD)
    status, payload = await call(proxy, **body)
    assert status == 200, payload
    delivery = starttls.find(body["email_subject"])[0]
    assert (delivery.tls, delivery.login) == (True, USER)
    assert payload["spiff__logs"][:3] == [
        f"Connecting to 127.0.0.1:{starttls.port} (STARTTLS).",
        "Starting TLS.",
        f"Logging in as {USER}.",
    ]


async def test_implicit_tls_with_login(proxy, smtps):
    _, delivery = await send(proxy, smtps, smtp_ssl=True, smtp_user=USER, smtp_password=PASSWORD)
    assert (delivery.tls, delivery.login) == (True, USER)


async def test_login_without_tls_warns(proxy, plain):
    body = params(plain, smtp_user=USER, smtp_password=PASSWORD)
    status, payload = await call(proxy, **body)
    assert status == 200
    assert plain.find(body["email_subject"])[0].login == USER
    assert "Logging in without TLS: the password crosses the network unencrypted." in payload["spiff__logs"]


async def test_user_without_password_sends_without_login(proxy, plain):
    """As the incumbent did: a login needs both; a diagram without a password keeps working."""
    body = params(plain, smtp_user=USER)
    status, payload = await call(proxy, **body)
    assert status == 200
    assert plain.find(body["email_subject"])[0].login is None
    assert payload["spiff__logs"][0] == (
        "smtp_user and smtp_password are needed together to log in; sending without login."
    )


async def test_wrong_password_is_unauthenticated(proxy, starttls):
    status, payload = await fail(
        proxy, starttls.port, smtp_starttls=True, smtp_user=USER, smtp_password="wrong-pw-123"
    )
    assert status == 401
    assert payload["error"]["error_code"] == "SMTPAuthenticationError"
    assert payload["error"]["message"].startswith(
        f"127.0.0.1:{starttls.port} refused the login of alice: 535"
    )


async def test_login_where_auth_is_not_offered(proxy, starttls):
    """aiosmtpd offers AUTH only after STARTTLS: logging in on the plain session cannot work."""
    status, payload = await fail(proxy, starttls.port, smtp_user=USER, smtp_password=PASSWORD)
    assert (status, payload["error"]["error_code"]) == (400, "SMTPNotSupportedError")
    assert "AUTH" in payload["error"]["message"]


async def test_starttls_where_it_is_not_offered(proxy, plain):
    status, payload = await fail(proxy, plain.port, smtp_starttls=True)
    assert (status, payload["error"]["error_code"]) == (400, "SMTPNotSupportedError")
    assert "STARTTLS" in payload["error"]["message"]


async def test_a_refused_recipient_among_others_is_reported_not_fatal(proxy, plain):
    result, delivery = await send(proxy, plain, email_to=["ann@example.com", REFUSED], cc=LATER)
    assert delivery.rcpt_tos == ["ann@example.com"]
    assert result["accepted"] == ["ann@example.com"]
    assert result["refused"] == {
        REFUSED: "550 5.1.1 No such user",
        LATER: "450 4.2.1 Mailbox busy, try later",
    }


@pytest.mark.parametrize(
    ("to", "status"),
    [
        pytest.param([REFUSED, LATER], 400, id="permanent"),
        pytest.param(LATER, 503, id="temporary"),
    ],
)
async def test_every_recipient_refused(proxy, plain, to, status):
    got, payload = await fail(proxy, plain.port, email_to=to)
    assert got == status
    assert payload["error"]["error_code"] == "SMTPRecipientsRefused"
    assert LATER in payload["error"]["message"]
    body = payload["command_response"]["body"]
    assert body["accepted"] == []
    assert LATER in body["refused"]
    assert body["message_id"]


async def test_closed_port_is_unavailable(proxy):
    port = free_port()
    status, payload = await fail(proxy, port)
    assert status == 503
    assert payload["error"] == {
        "error_code": "SMTPConnectError",
        "message": f"Cannot connect to 127.0.0.1:{port}: Connection refused.",
    }


async def test_silent_server_times_out(proxy):
    with SilentServer() as silent:
        started = time.monotonic()
        status, payload = await fail(proxy, silent.port, timeout=0.3)
    assert time.monotonic() - started < 2
    assert status == 504
    assert payload["error"]["error_code"] == "SMTPTimeoutError"
    assert (
        payload["error"]["message"]
        == f"127.0.0.1:{silent.port} did not answer within 0.3 s while connecting."
    )
    assert re.fullmatch(r"-> SMTPTimeoutError after \d+ ms", payload["spiff__logs"][-1])


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
async def test_untrusted_certificate_fails(proxy, untrusted, implicit):
    target = untrusted[1] if implicit else untrusted[0]
    mode = {"smtp_ssl": True} if implicit else {"smtp_starttls": True}
    status, payload = await fail(proxy, target.port, smtp_user=USER, smtp_password=PASSWORD, **mode)
    assert status == 400
    assert payload["error"]["error_code"] == "SSLCertVerificationError"
    assert "not trusted (unable to get local issuer certificate)" in payload["error"]["message"]


async def test_certificate_for_another_name_fails(proxy, wrong_name):
    status, payload = await fail(proxy, wrong_name.port, smtp_ssl=True)
    assert (status, payload["error"]["error_code"]) == (400, "SSLCertVerificationError")
    assert "mismatch" in payload["error"]["message"]


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
async def test_untrusted_certificate_trusted_per_call(proxy, untrusted, other_ca, implicit):
    target = untrusted[1] if implicit else untrusted[0]
    mode = {"smtp_ssl": True} if implicit else {"smtp_starttls": True}
    _, delivery = await send(proxy, target, smtp_tls_ca_cert=other_ca.cert_pem.bytes().decode(), **mode)
    assert delivery.tls


async def test_verification_can_be_turned_off(proxy, untrusted):
    body = params(untrusted[1], smtp_ssl=True, smtp_tls_verify=False)
    status, payload = await call(proxy, **body)
    assert status == 200
    assert untrusted[1].find(body["email_subject"])[0].tls
    assert "TLS certificate verification is off (smtp_tls_verify is false)." in payload["spiff__logs"]


async def test_implicit_tls_on_a_plain_port_is_a_tls_error(proxy, plain):
    status, payload = await fail(proxy, plain.port, smtp_ssl=True, timeout=5)
    assert (status, payload["error"]["error_code"]) == (400, "SSLError")
    assert "smtp_starttls" in payload["error"]["message"]


# (case, parameters replacing the valid ones, the fields the error must name)
INVALID: list[tuple[str, dict[str, Any], list[str]]] = [
    ("ssl-and-starttls", {"smtp_ssl": True, "smtp_starttls": True}, ["smtp_ssl"]),
    ("bad-to", {"email_to": "not an address"}, ["email_to"]),
    ("to-list-item", {"email_to": ["ann@example.com", 5]}, ["email_to[1]"]),
    ("to-object", {"email_to": {"a": 1}}, ["email_to"]),
    ("to-empty", {"email_to": " , ;"}, ["email_to"]),
    ("bad-cc", {"cc": "a@b@c"}, ["cc"]),
    ("bad-bcc", {"bcc": ["x@"]}, ["bcc[0]"]),
    ("bad-reply-to", {"reply_to": "Ann <ann@example.com"}, ["reply_to"]),
    ("two-senders", {"email_from": "a@example.com, b@example.com"}, ["email_from"]),
    ("non-ascii-local-part", {"email_from": "zoë@example.com"}, ["email_from"]),
    ("subject-newline", {"email_subject": "Hi\r\nBcc: evil@example.com"}, ["email_subject"]),
    ("not-data-url", {"attachments": ["https://example.com/x.pdf"]}, ["attachments[0]"]),
    ("bad-b64", {"attachments": ["data:application/pdf;base64,@@@@"]}, ["attachments[0]"]),
    ("bad-mime", {"attachments": ["data:pdf;base64,AAAA"]}, ["attachments[0]"]),
    ("attachments-object", {"attachments": {"name": "x"}}, ["attachments"]),
    ("port", {"smtp_port": 70000}, ["smtp_port"]),
    ("timeout", {"timeout": 0}, ["timeout"]),
    ("ca-cert", {"smtp_tls_ca_cert": "not a certificate"}, ["smtp_tls_ca_cert"]),
    ("host", {"smtp_host": "bad host"}, ["smtp_host"]),
    (
        "all-at-once",
        {"email_to": "nope", "cc": "nope", "smtp_ssl": True, "smtp_starttls": True},
        ["smtp_ssl", "email_to", "cc"],
    ),
]


async def test_invalid_parameters(proxy, plain):
    """Each case is one call, all in one test: every case through both paths, without a fixture each."""
    for case, extra, fields in INVALID:
        status, payload = await fail(proxy, plain.port, **extra)
        assert (status, payload["error"]["error_code"]) == (400, "InvalidParameters"), case
        for name in fields:
            assert f"{name} " in payload["error"]["message"], case


async def test_missing_required_parameters(proxy):
    status, payload = await call(proxy, smtp_host="127.0.0.1")
    assert (status, payload["error"]["error_code"]) == (400, "InvalidParameters")
    for name in ("smtp_port", "email_subject", "email_body", "email_to", "email_from"):
        assert name in payload["error"]["message"]


async def test_unicode_domain_is_sent_as_idna(proxy, plain):
    result, delivery = await send(proxy, plain, email_to="Zoë <zoe@bücher.example>")
    assert delivery.rcpt_tos == ["zoe@xn--bcher-kva.example"]
    assert result["accepted"] == ["zoe@xn--bcher-kva.example"]
    assert delivery.message["To"] == "Zoë <zoe@xn--bcher-kva.example>"


async def test_commands_catalogue(proxy):
    commands = (await proxy.get("/v1/commands")).json()
    command = next(c for c in commands if c["id"] == "smtp/SendEmail")
    parameters = {p["id"]: p for p in command["parameters"]}
    assert list(parameters)[:9] == [
        "smtp_host",
        "smtp_port",
        "email_subject",
        "email_body",
        "email_to",
        "email_from",
        "smtp_user",
        "smtp_password",
        "smtp_starttls",
    ]
    required = [name for name, p in parameters.items() if p["required"]]
    assert required == ["smtp_host", "smtp_port", "email_subject", "email_body", "email_to", "email_from"]
    assert parameters["smtp_password"]["secret"] is True
    assert (parameters["smtp_starttls"]["default"], parameters["smtp_tls_verify"]["default"]) == (False, True)
    assert parameters["smtp_port"]["type"] == "int"


async def test_secrets_stay_out_of_logs_and_messages(proxy, plain, starttls, caplog):
    caplog.set_level(logging.DEBUG)
    secret = {"smtp_user": USER, "smtp_password": PASSWORD}
    seen = []
    with SilentServer() as silent:
        calls = [
            params(starttls, smtp_starttls=True, **secret),
            params(plain, **secret),
            params(starttls, smtp_starttls=True, smtp_user=USER, smtp_password="wrong-S3cr3t-1"),
            params(starttls, **secret),  # AUTH not offered without TLS
            {**params(plain, **secret), "smtp_port": free_port()},
            {**params(plain, **secret), "smtp_port": silent.port, "timeout": 0.2},
            params(plain, email_to="bad address", **secret),
        ]
        for body in calls:
            _, payload = await call(proxy, **body)
            seen.extend(payload["spiff__logs"])
            seen.append(json.dumps(payload))
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "Connecting to" in text
    for value in (PASSWORD, "wrong-S3cr3t-1"):
        assert value not in text


async def test_grpc_callers_get_results_and_rich_errors(grpc_channel, plain):
    stub = smtp_pb2_grpc.SmtpServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    subject = f"gRPC {uuid.uuid4().hex}"
    request = smtp_pb2.SendEmailRequest(
        smtp_host="127.0.0.1",
        smtp_port=plain.port,
        email_subject=subject,
        email_body="via gRPC",
        email_to=json_values.dump(["ann@example.com", REFUSED]),
        email_from="noreply@example.com",
    )
    reply = await stub.SendEmail(request, timeout=10)
    assert list(reply.accepted) == ["ann@example.com"]
    assert dict(reply.refused) == {REFUSED: "550 5.1.1 No such user"}
    assert plain.find(subject)[0].message["Message-ID"] == reply.message_id
    request.email_to.CopyFrom(json_values.dump(REFUSED))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.SendEmail(request, timeout=10)
    failure = caught.value
    assert failure.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = [value for key, value in failure.trailing_metadata() or () if key == "grpc-status-details-bin"]
    status = status_pb2.Status.FromString(details[0])
    reasons, results = [], []
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reasons.append(info.reason)
        elif detail.Is(smtp_pb2.SendEmailResponse.DESCRIPTOR):
            results.append(smtp_pb2.SendEmailResponse())
            detail.Unpack(results[-1])
    assert reasons == ["SMTPRecipientsRefused"]
    assert dict(results[0].refused) == {REFUSED: "550 5.1.1 No such user"}


async def test_direct_call_bounded_by_the_context_deadline():
    service = SmtpService(ca_file="", local_hostname="client.test")
    request = smtp_pb2.SendEmailRequest(
        smtp_host="127.0.0.1",
        smtp_port=1,
        email_subject="s",
        email_body="b",
        email_to=json_values.dump("ann@example.com"),
        email_from="noreply@example.com",
        timeout=30,
    )
    with SilentServer() as silent:
        request.smtp_port = silent.port
        started = time.monotonic()
        with pytest.raises(errors.CommandError) as caught:
            await service.SendEmail(request, LocalContext(time.monotonic() + 0.4))
    assert time.monotonic() - started < 1
    assert (caught.value.code, caught.value.error_code) == (
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "SMTPTimeoutError",
    )


async def test_constructor_settings(plain, starttls, tmp_path):
    """Keyword arguments replace the environment: the EHLO name, and a CA file that does not load."""
    service = SmtpService(local_hostname="client.test")
    request = smtp_pb2.SendEmailRequest(**params(plain, email_to=json_values.dump("ann@example.com")))
    await service.SendEmail(request, LocalContext(time.monotonic() + 10))
    assert plain.find(request.email_subject)[0].ehlo == "client.test"
    empty = tmp_path / "empty.pem"
    empty.write_text("no certificates here\n")
    for path in (str(empty), str(tmp_path / "missing.pem")):
        broken = SmtpService(ca_file=path, local_hostname="client.test")
        request = smtp_pb2.SendEmailRequest(
            **params(starttls, email_to=json_values.dump("ann@example.com"), smtp_starttls=True)
        )
        with pytest.raises(errors.CommandError) as caught:
            await broken.SendEmail(request, LocalContext(time.monotonic() + 10))
        assert (caught.value.code, caught.value.error_code) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "TLSConfigurationError",
        )
        assert path in caught.value.message

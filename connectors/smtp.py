"""The smtp connector: sends one email per call through any SMTP server, with aiosmtplib.

Requests (smtp/SendEmail):
    smtp_host, smtp_port   the server. smtp_ssl connects with implicit TLS (SMTPS, port 465);
                 smtp_starttls upgrades a plain connection with STARTTLS (port 587) whether or
                 not credentials are given (the incumbent only did so with credentials); both at
                 once is InvalidParameters; neither is plain SMTP, never upgraded on its own (a
                 server offering STARTTLS with a certificate nobody trusts keeps working as before).
    smtp_tls_verify        certificates are verified (chain and host name) unless this is false.
                 The system's CAs are trusted, plus the PEM file in CONNECTOR_PROXY_SMTP_CA_FILE
                 and the PEM text in smtp_tls_ca_cert.
    smtp_user, smtp_password
                 login, only when both are given (as the incumbent did); a login without TLS gets
                 a warning line in spiff__logs.
    email_from   exactly one address; also the envelope sender.
    email_to, cc, bcc, reply_to
                 a string of addresses separated by commas or semicolons (outside quotes and
                 angle brackets), or a list of such strings. ``Ann <ann@example.com>`` keeps its
                 display name. Domains may be Unicode (sent IDNA-encoded); local parts must be
                 ASCII. Bcc addresses are envelope recipients only: no header names them.
    email_subject, email_body, email_body_html
                 the body is text/plain; with HTML the two are a multipart/alternative.
    attachments  data URLs (``data:<mime>[;name=<file>][;charset=<cs>][;base64],<data>``, name
                 percent-decoded), one string or a list. Unnamed files are ``attachment-<n>.<ext>``.
    timeout      seconds for the whole exchange (default 30), bounded by the call's deadline
                 less 0.1 s so that a timeout is reported as SMTPTimeoutError with its logs.

The message is built and serialized in a worker thread (a 20 MB attachment takes seconds to
encode) as pure 7-bit MIME (quoted-printable or base64 parts, RFC 2047 headers), so it needs no
8BITMIME or SMTPUTF8 from the server. It gets Date and Message-ID headers.

Result: ``message_id``, ``accepted`` (envelope recipients the server took), ``refused`` (those it
refused while taking others: the mail went out, so the call succeeds) and ``server_reply``.

Errors keep the incumbent's smtplib exception class names as error codes where one fits; replies
4xx (temporary) are UNAVAILABLE, 5xx (permanent) are FAILED_PRECONDITION (UNAUTHENTICATED for a
refused login). The table is in the proto.

Configuration (environment, or the constructor's keyword arguments):
    CONNECTOR_PROXY_SMTP_CA_FILE          PEM file of CAs to trust besides the system's.
    CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME   the name sent with EHLO (default: this host's FQDN).

Passwords never reach logs, spiff__logs or messages; addresses, the host and replies may.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import email.errors
import email.policy
import email.utils
import math
import mimetypes
import os
import re
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any

from spiff.connector.smtp.v1 import smtp_pb2, smtp_pb2_grpc
from spiff.connector.v1 import types_pb2

from connectors._lazy import lazy_import
from server import errors, json_values, log

if TYPE_CHECKING:
    import aiosmtplib
else:  # imported by the first send, not by discovery (about 5 ms on the loop, once: not worth a thread)
    aiosmtplib = lazy_import("aiosmtplib")

__all__ = ["SmtpService"]

ENV_CA_FILE = "CONNECTOR_PROXY_SMTP_CA_FILE"
ENV_LOCAL_HOSTNAME = "CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME"
DEFAULT_TIMEOUT = 30.0
DEADLINE_MARGIN = 0.1
QUIT_TIMEOUT = 1.0
# Pure 7-bit output: any server takes it, without 8BITMIME or SMTPUTF8.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")
_ADDR_SPEC = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+")
_ANGLE = re.compile(r"(?P<name>.*?)\s*<(?P<addr>[^<>]*)>", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class _Outgoing:
    """A validated call: where to connect, how, and the serialized message."""

    host: str
    port: int
    mode: str  # "plain", "starttls" or "ssl"
    verify: bool
    ca_pem: str
    user: str | None
    password: str | None = field(repr=False)
    sender: str
    recipients: list[str]
    counts: tuple[int, int, int]  # To, Cc, Bcc
    attachments: int
    message_id: str
    raw: bytes = field(repr=False)
    timeout: float

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpService(smtp_pb2_grpc.SmtpServiceServicer):
    """Sends email. One connection per call: SMTP sessions are cheap and servers limit idle ones.

    Args:
        ca_file: PEM file of CAs to trust besides the system's; defaults to the environment's
            CONNECTOR_PROXY_SMTP_CA_FILE. It is read on the first TLS call.
        local_hostname: the EHLO name; defaults to CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME, else
            this host's FQDN (looked up once, in a worker thread).
    """

    def __init__(self, *, ca_file: str | None = None, local_hostname: str | None = None) -> None:
        self._ca_file = ca_file if ca_file is not None else os.environ.get(ENV_CA_FILE, "")
        self._local_hostname = (
            local_hostname if local_hostname is not None else os.environ.get(ENV_LOCAL_HOSTNAME, "")
        )
        if any(char.isspace() or not char.isprintable() for char in self._local_hostname):
            msg = f"{ENV_LOCAL_HOSTNAME} must be a host name, not {self._local_hostname!r}"
            raise ValueError(msg)
        self._contexts: dict[bool, ssl.SSLContext] = {}  # by verify, for calls without smtp_tls_ca_cert

    async def SendEmail(self, request: smtp_pb2.SendEmailRequest, context: Any) -> smtp_pb2.SendEmailResponse:
        outgoing = await asyncio.to_thread(_prepare, request)
        budget = outgoing.timeout
        remaining = context.time_remaining()
        if remaining is not None:
            budget = min(budget, remaining - DEADLINE_MARGIN)
        if budget <= 0:
            message_text = f"No time left to send through {outgoing.target}."
            raise errors.DeadlineExceeded(message_text, error_code="SMTPTimeoutError")
        tls_context = None
        if outgoing.mode != "plain":
            tls_context = await self._tls_context(outgoing)
        local_hostname = await self._ehlo_name()
        return await _deliver(outgoing, tls_context, local_hostname, budget)

    async def _tls_context(self, outgoing: _Outgoing) -> ssl.SSLContext:
        if not outgoing.verify:
            log("TLS certificate verification is off (smtp_tls_verify is false).")
        if outgoing.ca_pem and outgoing.verify:
            return await asyncio.to_thread(self._new_context, True, outgoing.ca_pem)
        tls_context = self._contexts.get(outgoing.verify)
        if tls_context is None:
            tls_context = await asyncio.to_thread(self._new_context, outgoing.verify, "")
            self._contexts[outgoing.verify] = tls_context
        return tls_context

    def _new_context(self, verify: bool, ca_pem: str) -> ssl.SSLContext:
        tls_context = ssl.create_default_context()
        if not verify:
            tls_context.check_hostname = False
            tls_context.verify_mode = ssl.CERT_NONE
            return tls_context
        if self._ca_file:
            try:
                tls_context.load_verify_locations(cafile=self._ca_file)
            except (OSError, ssl.SSLError) as exc:  # SSLError: no PEM certificate in the file
                reason = exc.strerror if exc.strerror else type(exc).__name__
                message_text = f"{ENV_CA_FILE} ({self._ca_file}) cannot be loaded: {reason}."
                raise errors.FailedPrecondition(message_text, error_code="TLSConfigurationError") from None
        if ca_pem:
            tls_context.load_verify_locations(cadata=ca_pem)  # checked by _prepare
        return tls_context

    async def _ehlo_name(self) -> str:
        if not self._local_hostname:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname


async def _deliver(
    outgoing: _Outgoing, tls_context: ssl.SSLContext | None, local_hostname: str, budget: float
) -> smtp_pb2.SendEmailResponse:
    """One SMTP session: connect, STARTTLS, login and send within ``budget`` seconds, then QUIT."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + budget
    smtp = aiosmtplib.SMTP(
        hostname=outgoing.host,
        port=outgoing.port,
        use_tls=outgoing.mode == "ssl",
        start_tls=False,  # done explicitly below, and never opportunistically
        tls_context=tls_context,
        local_hostname=local_hostname,
        timeout=budget,
    )
    described = {"plain": "plain SMTP", "starttls": "STARTTLS", "ssl": "implicit TLS"}[outgoing.mode]
    phase = "connecting"
    polite = False  # whether the session is healthy enough to end with QUIT
    started = time.perf_counter()
    try:
        async with asyncio.timeout(budget):
            log(f"Connecting to {outgoing.target} ({described}).")
            await smtp.connect()
            if outgoing.mode == "starttls":
                phase = "starting TLS"
                log("Starting TLS.")
                await smtp.starttls(tls_context=tls_context)
            if outgoing.user is not None and outgoing.password is not None:
                phase = "logging in"
                if outgoing.mode == "plain":
                    log("Logging in without TLS: the password crosses the network unencrypted.")
                log(f"Logging in as {outgoing.user}.")
                await smtp.login(outgoing.user, outgoing.password)
            phase = "sending"
            to, cc, bcc = outgoing.counts
            log(
                f"Sending {outgoing.message_id} from {outgoing.sender} to {len(outgoing.recipients)} "
                f"recipient(s) ({to} To, {cc} Cc, {bcc} Bcc), {outgoing.attachments} attachment(s), "
                f"{len(outgoing.raw)} bytes."
            )
            refused, reply = await smtp.sendmail(outgoing.sender, outgoing.recipients, outgoing.raw)
            polite = True
    except aiosmtplib.SMTPRecipientsRefused as exc:
        polite = True
        log(f"-> every recipient refused after {_ms(started)} ms")
        raise _all_refused(outgoing, exc) from None
    except Exception as exc:
        # A refusal or a missing extension leaves the session usable; a TLS, connection or
        # timeout failure does not.
        polite = (
            _ssl_error(exc) is None
            and isinstance(exc, aiosmtplib.SMTPException)
            and not isinstance(
                exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | TimeoutError
            )
        )
        error = _translate(exc, outgoing, phase, budget)
        if error is None:
            raise
        log(f"-> {error.error_code} after {_ms(started)} ms")
        raise error from None
    finally:
        await _hang_up(smtp, polite, ends - DEADLINE_MARGIN)
    accepted = [address for address in outgoing.recipients if address not in refused]
    log(f"-> accepted for {len(accepted)} of {len(outgoing.recipients)} recipient(s) in {_ms(started)} ms.")
    for address, response in refused.items():
        log(f"Refused {address}: {response.code} {response.message}")
    return smtp_pb2.SendEmailResponse(
        message_id=outgoing.message_id,
        accepted=accepted,
        refused={address: f"{r.code} {r.message}" for address, r in refused.items()},
        server_reply=f"250 {reply}",  # sendmail raises SMTPDataError for any other code
    )


async def _hang_up(smtp: aiosmtplib.SMTP, polite: bool, ends: float) -> None:
    """Ends the session: QUIT when it is healthy and time is left (the mail may already be sent,
    so nothing here fails the call), else drop the connection at once."""
    left = ends - asyncio.get_running_loop().time()
    if polite and left > 0 and smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=min(QUIT_TIMEOUT, left))
    transport = smtp.transport
    if isinstance(transport, asyncio.Transport) and not transport.is_closing():
        transport.abort()  # close() would wait for the TLS close_notify exchange
    smtp.close()


def _all_refused(outgoing: _Outgoing, exc: aiosmtplib.SMTPRecipientsRefused) -> errors.CommandError:
    refused = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
    temporary = all(400 <= r.code < 500 for r in exc.recipients)
    error = errors.Unavailable if temporary else errors.FailedPrecondition
    listed = "; ".join(f"{address} ({reply})" for address, reply in refused.items())
    message_text = f"{outgoing.target} refused every recipient: {listed}."
    result = smtp_pb2.SendEmailResponse(message_id=outgoing.message_id, refused=refused)
    return error(message_text, error_code="SMTPRecipientsRefused", result=result)


def _translate(exc: Exception, outgoing: _Outgoing, phase: str, budget: float) -> errors.CommandError | None:
    """The documented error for what aiosmtplib, ssl or the OS raised; None for anything else."""
    target = outgoing.target
    tls_error = _ssl_error(exc)
    if isinstance(tls_error, ssl.SSLCertVerificationError):
        reason = tls_error.verify_message or tls_error.reason or "verification failed"
        message_text = (
            f"The TLS certificate of {target} is not trusted ({reason}). Trust its CA with "
            f"{ENV_CA_FILE} or smtp_tls_ca_cert, or set smtp_tls_verify to false."
        )
        return errors.FailedPrecondition(message_text, error_code="SSLCertVerificationError")
    if tls_error is not None:
        reason = tls_error.reason or type(tls_error).__name__
        hint = ""
        if outgoing.mode == "ssl":
            hint = " Does the port expect plain SMTP or STARTTLS (smtp_starttls) rather than smtp_ssl?"
        message_text = f"TLS with {target} failed ({reason}).{hint}"
        return errors.FailedPrecondition(message_text, error_code="SSLError")
    if isinstance(exc, TimeoutError):  # aiosmtplib's SMTPTimeoutError is one
        after = " The server may still deliver the message." if phase == "sending" else ""
        message_text = f"{target} did not answer within {budget:.3g} s while {phase}.{after}"
        return errors.DeadlineExceeded(message_text, error_code="SMTPTimeoutError")
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        message_text = f"{target} answered {exc.code} {exc.message} instead of greeting."
        return _by_reply(exc.code)(message_text, error_code="SMTPConnectError")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _refusal(exc, outgoing, phase)
    if isinstance(exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | OSError):
        return _connection_error(exc, target, phase)
    if isinstance(exc, aiosmtplib.SMTPException):  # STARTTLS or AUTH not offered, no usable mechanism
        message_text = f"{target}: {exc.message}"
        return errors.FailedPrecondition(message_text, error_code="SMTPNotSupportedError")
    return None


def _refusal(exc: aiosmtplib.SMTPResponseException, outgoing: _Outgoing, phase: str) -> errors.CommandError:
    target, reply = outgoing.target, f"{exc.code} {exc.message}"
    error = _by_reply(exc.code)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        if exc.code >= 500:
            error = errors.Unauthenticated
        message_text = f"{target} refused the login of {outgoing.user}: {reply}"
        return error(message_text, error_code="SMTPAuthenticationError")
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        message_text = f"{target} refused the sender {exc.sender}: {reply}"
        return error(message_text, error_code="SMTPSenderRefused")
    if isinstance(exc, aiosmtplib.SMTPDataError):
        message_text = f"{target} refused the message: {reply}"
        return error(message_text, error_code="SMTPDataError")
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        message_text = f"{target} refused the EHLO/HELO greeting: {reply}"
        return error(message_text, error_code="SMTPHeloError")
    message_text = f"{target} answered {reply} while {phase}."
    return error(message_text, error_code="SMTPResponseException")


def _connection_error(exc: Exception, target: str, phase: str) -> errors.CommandError:
    cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
    if isinstance(cause, OSError) and not isinstance(cause, socket.gaierror) and (cause.errno or 0) > 0:
        detail = os.strerror(cause.errno or 0)  # asyncio's strerror is "Connect call failed (...)"
    elif isinstance(cause, OSError) and cause.strerror:
        detail = cause.strerror
    else:
        detail = str(cause) or type(cause).__name__
    if isinstance(exc, aiosmtplib.SMTPConnectError) or (
        phase == "connecting" and not isinstance(exc, aiosmtplib.SMTPServerDisconnected)
    ):
        message_text = f"Cannot connect to {target}: {detail}."
        return errors.Unavailable(message_text, error_code="SMTPConnectError")
    message_text = f"{target} closed the connection while {phase}: {detail}."
    return errors.Unavailable(message_text, error_code="SMTPServerDisconnected")


def _by_reply(code: int) -> type[errors.CommandError]:
    """Temporary SMTP replies (4xx) are worth retrying; the others are not."""
    return errors.Unavailable if 400 <= code < 500 else errors.FailedPrecondition


def _ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind ``exc`` (aiosmtplib wraps the one of implicit TLS), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _prepare(request: smtp_pb2.SendEmailRequest) -> _Outgoing:
    """Validates every parameter (reporting all bad ones at once), then builds the message."""
    bad: list[errors.Violation] = []
    host = request.smtp_host.strip()
    if not host or any(char.isspace() or char in "/@" for char in host) or _CONTROL.search(host):
        bad.append(errors.Violation("smtp_host", "must be a host name or IP address"))
    if not 0 < request.smtp_port < 65536:
        bad.append(errors.Violation("smtp_port", "must be between 1 and 65535"))
    use_ssl = request.smtp_ssl if request.HasField("smtp_ssl") else False
    starttls = request.smtp_starttls if request.HasField("smtp_starttls") else False
    if use_ssl and starttls:
        bad.append(errors.Violation("smtp_ssl", "cannot be combined with smtp_starttls"))
    timeout = request.timeout if request.HasField("timeout") else DEFAULT_TIMEOUT
    if not (math.isfinite(timeout) and timeout > 0):
        bad.append(errors.Violation("timeout", "must be a number of seconds greater than 0"))
    verify = request.smtp_tls_verify if request.HasField("smtp_tls_verify") else True
    if request.smtp_tls_ca_cert:
        try:
            ssl.create_default_context(cadata=request.smtp_tls_ca_cert)
        except (ssl.SSLError, ValueError):
            bad.append(errors.Violation("smtp_tls_ca_cert", "must be PEM text of CA certificates"))
    senders = _addresses(request.email_from, "email_from", bad)
    if len(senders) != 1 and not any(v.field.startswith("email_from") for v in bad):
        bad.append(errors.Violation("email_from", "must be exactly one address"))
    to = _addresses(_json(request.email_to, "email_to", bad), "email_to", bad)
    if not to and not any(v.field.startswith("email_to") for v in bad):
        bad.append(errors.Violation("email_to", "must name at least one address"))
    cc = _addresses(_json(request.cc, "cc", bad), "cc", bad)
    bcc = _addresses(_json(request.bcc, "bcc", bad), "bcc", bad)
    reply_to = _addresses(_json(request.reply_to, "reply_to", bad), "reply_to", bad)
    if any(char in request.email_subject for char in "\r\n"):
        bad.append(errors.Violation("email_subject", "must not contain line breaks"))
    attachments = _attachments(_json(request.attachments, "attachments", bad), bad)
    if bad:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)
    sender = senders[0]
    message_id = email.utils.make_msgid(domain=sender.domain)
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if reply_to:
        msg["Reply-To"] = reply_to
    msg["Subject"] = request.email_subject
    msg["Date"] = email.utils.formatdate(usegmt=True)
    msg["Message-ID"] = message_id
    msg.set_content(request.email_body)
    if request.email_body_html:
        msg.add_alternative(request.email_body_html, subtype="html")
    for filename, mime, params, data in attachments:
        maintype, subtype = mime.split("/")
        msg.add_attachment(data, maintype, subtype, filename=filename, params=params)
    recipients: list[str] = []
    for address in (*to, *cc, *bcc):
        if address.addr_spec.lower() not in (r.lower() for r in recipients):
            recipients.append(address.addr_spec)
    password_given = bool(request.smtp_user and request.smtp_password)
    if not password_given and (request.smtp_user or request.smtp_password):
        log("smtp_user and smtp_password are needed together to log in; sending without login.")
    return _Outgoing(
        host=host,
        port=request.smtp_port,
        mode="ssl" if use_ssl else "starttls" if starttls else "plain",
        verify=verify,
        ca_pem=request.smtp_tls_ca_cert,
        user=request.smtp_user if password_given else None,
        password=request.smtp_password if password_given else None,
        sender=sender.addr_spec,
        recipients=recipients,
        counts=(len(to), len(cc), len(bcc)),
        attachments=len(attachments),
        message_id=message_id,
        raw=msg.as_bytes(policy=_POLICY),
        timeout=timeout,
    )


def _json(value: types_pb2.JsonValue, name: str, bad: list[errors.Violation]) -> Any:
    try:
        return json_values.load(value)
    except ValueError:
        bad.append(errors.Violation(name, "is not valid JSON"))
        return None


def _addresses(value: Any, name: str, bad: list[errors.Violation]) -> list[Address]:
    """Addresses from a string of comma/semicolon-separated ones, or a list of such strings."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [(name, value)]
    elif isinstance(value, list):
        items = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
    else:
        bad.append(errors.Violation(name, "must be a string of addresses or a list of addresses"))
        return []
    found: list[Address] = []
    for path, item in items:
        if not isinstance(item, str):
            bad.append(errors.Violation(path, "must be a string"))
            continue
        for piece in _split(item):
            address = _address(piece)
            if address is None:
                bad.append(errors.Violation(path, f"{piece!r} is not an email address"))
            else:
                found.append(address)
    return found


def _split(text: str) -> list[str]:
    """``text`` split at commas and semicolons outside quotes and angle brackets."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(depth - 1, 0)
        elif not quoted and depth == 0 and char in ",;":
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def _address(piece: str) -> Address | None:
    """``addr@example.com`` or ``Display Name <addr@example.com>``; None when it is neither."""
    if _CONTROL.search(piece):
        return None
    angle = _ANGLE.fullmatch(piece)
    name, addr = (angle["name"].strip(), angle["addr"].strip()) if angle else ("", piece)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not _ADDR_SPEC.fullmatch(addr):
        return None
    local, _, domain = addr.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
        return Address(display_name=name, addr_spec=f"{local}@{ascii_domain}")
    except (UnicodeError, ValueError, IndexError, email.errors.HeaderParseError):
        return None


def _attachments(value: Any, bad: list[errors.Violation]) -> list[tuple[str, str, dict[str, str], bytes]]:
    """(filename, mime type, params, bytes) of each data URL."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        bad.append(errors.Violation("attachments", "must be a list of data URLs"))
        return []
    found = []
    for index, item in enumerate(items, start=1):
        path = f"attachments[{index - 1}]"
        parsed = _data_url(item, index) if isinstance(item, str) else None
        if parsed is None:
            bad.append(errors.Violation(path, "must be a data URL: data:<mime>;name=<file>;base64,<data>"))
        else:
            found.append(parsed)
    return found


def _data_url(text: str, index: int) -> tuple[str, str, dict[str, str], bytes] | None:
    head, comma, data = text.strip().partition(",")
    if not comma or head[:5].lower() != "data:":
        return None
    mime, *options = (part.strip() for part in head[5:].split(";"))
    mime = mime.lower() or "text/plain"  # RFC 2397's default
    if not _MIME_TYPE.fullmatch(mime):
        return None
    filename, params, encoded = "", {}, False
    for option in options:
        key, equals, option_value = option.partition("=")
        key = key.strip().lower()
        if not equals and key == "base64":
            encoded = True
        elif key in ("name", "filename"):
            filename = urllib.parse.unquote(option_value.strip())
        elif key == "charset" and option_value.strip():
            params["charset"] = urllib.parse.unquote(option_value.strip())
    try:
        if encoded:
            compact = "".join(data.split())
            content = base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True)
        else:
            content = urllib.parse.unquote_to_bytes(data)
    except (binascii.Error, ValueError):
        return None
    filename = _CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if not filename:
        filename = f"attachment-{index}{mimetypes.guess_extension(mime) or '.bin'}"
    return filename, mime, params, content


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)

"""The smtp servicer and its send flow: one SMTP session per call, with aiosmtplib.

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
                 addresses (see ``_addresses``). Bcc addresses are envelope recipients only: no
                 header names them.
    email_subject, email_body, email_body_html
                 the body is text/plain; with HTML the two are a multipart/alternative.
    attachments  data URLs (see ``_attachments``).
    timeout      seconds for the whole exchange (default 30), bounded by the call's deadline
                 less 0.1 s so that a timeout is reported as SMTPTimeoutError with its logs.

The message is built and serialized in a worker thread (a 20 MB attachment takes seconds to
encode) as pure 7-bit MIME (see ``_message``).

Result: ``message_id``, ``accepted`` (envelope recipients the server took), ``refused`` (those it
refused while taking others: the mail went out, so the call succeeds) and ``server_reply``.

Errors: see ``_errors``; the table is in the proto.

Configuration (environment, or the constructor's keyword arguments):
    CONNECTOR_PROXY_SMTP_CA_FILE          PEM file of CAs to trust besides the system's.
    CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME   the name sent with EHLO (default: this host's FQDN).

Passwords never reach logs, spiff__logs or messages; addresses, the host and replies may.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any

from spiff.connector.smtp.v1 import smtp_pb2, smtp_pb2_grpc

from connectors._lazy import lazy_import
from connectors._timing import ms_since, time_budget
from server import errors, log, run_blocking
from server.egress import EgressDenied, EgressPolicy

from ._errors import ENV_CA_FILE, all_refused, new_tls_context, ssl_error, translate
from ._message import Outgoing, prepare

if TYPE_CHECKING:
    import aiosmtplib
else:  # imported by the first send, not by discovery (about 5 ms on the loop, once: not worth a thread)
    aiosmtplib = lazy_import("aiosmtplib")

__all__ = ["ENV_LOCAL_HOSTNAME", "SmtpService"]

ENV_LOCAL_HOSTNAME = "CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME"
DEADLINE_MARGIN = 0.1
QUIT_TIMEOUT = 1.0


class SmtpService(smtp_pb2_grpc.SmtpServiceServicer):
    """Sends email. One connection per call: SMTP sessions are cheap and servers limit idle ones.

    Args:
        ca_file: PEM file of CAs to trust besides the system's; defaults to the environment's
            CONNECTOR_PROXY_SMTP_CA_FILE. It is read on the first TLS call.
        local_hostname: the EHLO name; defaults to CONNECTOR_PROXY_SMTP_LOCAL_HOSTNAME, else
            this host's FQDN (looked up once, in a worker thread).
        egress: which servers may be reached; by default the proxy's egress settings (``server.egress``).
    """

    def __init__(
        self,
        *,
        ca_file: str | None = None,
        local_hostname: str | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._egress = egress or EgressPolicy.from_env()
        self._ca_file = ca_file if ca_file is not None else os.environ.get(ENV_CA_FILE, "")
        self._local_hostname = (
            local_hostname if local_hostname is not None else os.environ.get(ENV_LOCAL_HOSTNAME, "")
        )
        if any(char.isspace() or not char.isprintable() for char in self._local_hostname):
            msg = f"{ENV_LOCAL_HOSTNAME} must be a host name, not {self._local_hostname!r}"
            raise ValueError(msg)
        self._contexts: dict[bool, ssl.SSLContext] = {}  # by verify, for calls without smtp_tls_ca_cert

    async def SendEmail(self, request: smtp_pb2.SendEmailRequest, context: Any) -> smtp_pb2.SendEmailResponse:
        outgoing = await run_blocking(prepare, request)
        budget = time_budget(outgoing.timeout, context, DEADLINE_MARGIN)
        if budget <= 0:
            message_text = f"No time left to send through {outgoing.target}."
            raise errors.DeadlineExceeded(message_text, error_code="SMTPTimeoutError")
        tls_context = None
        if outgoing.mode != "plain":
            tls_context = await self._tls_context(outgoing)
        local_hostname = await self._ehlo_name()
        return await _deliver(outgoing, tls_context, local_hostname, budget, self._egress)

    async def _tls_context(self, outgoing: Outgoing) -> ssl.SSLContext:
        if not outgoing.verify:
            log("TLS certificate verification is off (smtp_tls_verify is false).")
        if outgoing.ca_pem and outgoing.verify:
            return await run_blocking(new_tls_context, True, outgoing.ca_pem, self._ca_file)
        tls_context = self._contexts.get(outgoing.verify)
        if tls_context is None:
            tls_context = await run_blocking(new_tls_context, outgoing.verify, "", self._ca_file)
            self._contexts[outgoing.verify] = tls_context
        return tls_context

    async def _ehlo_name(self) -> str:
        if not self._local_hostname:
            self._local_hostname = await run_blocking(socket.getfqdn)
        return self._local_hostname


async def _deliver(
    outgoing: Outgoing,
    tls_context: ssl.SSLContext | None,
    local_hostname: str,
    budget: float,
    egress: EgressPolicy,
) -> smtp_pb2.SendEmailResponse:
    """One SMTP session: connect, STARTTLS, login and send within ``budget`` seconds, then QUIT.

    The host is resolved once and checked by the egress policy, and the session runs on a socket
    connected to the checked address; TLS still verifies the certificate against the host name.
    """
    loop = asyncio.get_running_loop()
    ends = loop.time() + budget
    smtp = aiosmtplib.SMTP(
        hostname=outgoing.host,  # the TLS server name; the connection is the checked socket's
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
            sock, address = await egress.connect_socket(outgoing.host, outgoing.port, connector="smtp")
            if address != outgoing.host:
                log(f"Connected to {address}.")
            try:
                await smtp.connect(sock=sock)
            finally:
                if not smtp.is_connected:
                    sock.close()
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
    except EgressDenied:
        log(f"-> refused by the egress policy after {ms_since(started)} ms")
        raise
    except aiosmtplib.SMTPRecipientsRefused as exc:
        polite = True
        log(f"-> every recipient refused after {ms_since(started)} ms")
        raise all_refused(outgoing, exc) from None
    except Exception as exc:
        # A refusal or a missing extension leaves the session usable; a TLS, connection or
        # timeout failure does not.
        polite = (
            ssl_error(exc) is None
            and isinstance(exc, aiosmtplib.SMTPException)
            and not isinstance(
                exc, aiosmtplib.SMTPConnectError | aiosmtplib.SMTPServerDisconnected | TimeoutError
            )
        )
        error = translate(exc, outgoing, phase, budget)
        if error is None:
            raise
        log(f"-> {error.error_code} after {ms_since(started)} ms")
        raise error from None
    finally:
        await _hang_up(smtp, polite, ends - DEADLINE_MARGIN)
    accepted = [address for address in outgoing.recipients if address not in refused]
    log(
        f"-> accepted for {len(accepted)} of {len(outgoing.recipients)} recipient(s) "
        f"in {ms_since(started)} ms."
    )
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
    transport = smtp.transport  # taken first: QUIT forgets it, and may leave TLS half-closed
    if polite and left > 0 and smtp.is_connected:
        with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
            await smtp.quit(timeout=min(QUIT_TIMEOUT, left))
    smtp.close()
    if isinstance(transport, asyncio.Transport):
        # A TLS close waits for the server's close_notify (up to 30 s, the socket open meanwhile);
        # after QUIT nothing is owed, so the socket is closed now, and released before returning.
        transport.abort()
        await asyncio.sleep(0)

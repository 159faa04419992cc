"""What aiosmtplib, ssl or the OS raised, as the documented command errors; and the TLS contexts.

Error codes keep the incumbent's smtplib exception class names where one fits; replies 4xx
(temporary) are UNAVAILABLE, 5xx (permanent) are FAILED_PRECONDITION (UNAUTHENTICATED for a
refused login). The table is in the proto.
"""

from __future__ import annotations

import os
import socket
import ssl
from typing import TYPE_CHECKING

from spiff.connector.smtp.v1 import smtp_pb2

from connectors._lazy import lazy_import
from server import errors

from ._message import Outgoing

if TYPE_CHECKING:
    import aiosmtplib
else:  # imported by the first send, not by discovery (connectors._lazy)
    aiosmtplib = lazy_import("aiosmtplib")

__all__ = ["ENV_CA_FILE", "all_refused", "new_tls_context", "ssl_error", "translate"]

ENV_CA_FILE = "CONNECTOR_PROXY_SMTP_CA_FILE"


def new_tls_context(verify: bool, ca_pem: str, ca_file: str) -> ssl.SSLContext:
    """The system's CAs, plus ``ca_file`` and ``ca_pem`` when given; nothing checked unless ``verify``."""
    tls_context = ssl.create_default_context()
    if not verify:
        tls_context.check_hostname = False
        tls_context.verify_mode = ssl.CERT_NONE
        return tls_context
    if ca_file:
        try:
            tls_context.load_verify_locations(cafile=ca_file)
        except (OSError, ssl.SSLError) as exc:  # SSLError: no PEM certificate in the file
            reason = exc.strerror if exc.strerror else type(exc).__name__
            message_text = f"{ENV_CA_FILE} ({ca_file}) cannot be loaded: {reason}."
            raise errors.FailedPrecondition(message_text, error_code="TLSConfigurationError") from None
    if ca_pem:
        tls_context.load_verify_locations(cadata=ca_pem)  # checked by _message.prepare
    return tls_context


def all_refused(outgoing: Outgoing, exc: aiosmtplib.SMTPRecipientsRefused) -> errors.CommandError:
    refused = {r.recipient: f"{r.code} {r.message}" for r in exc.recipients}
    temporary = all(400 <= r.code < 500 for r in exc.recipients)
    error = errors.Unavailable if temporary else errors.FailedPrecondition
    listed = "; ".join(f"{address} ({reply})" for address, reply in refused.items())
    message_text = f"{outgoing.target} refused every recipient: {listed}."
    result = smtp_pb2.SendEmailResponse(message_id=outgoing.message_id, refused=refused)
    return error(message_text, error_code="SMTPRecipientsRefused", result=result)


def translate(exc: Exception, outgoing: Outgoing, phase: str, budget: float) -> errors.CommandError | None:
    """The documented error for what aiosmtplib, ssl or the OS raised; None for anything else."""
    target = outgoing.target
    tls_error = ssl_error(exc)
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


def _refusal(exc: aiosmtplib.SMTPResponseException, outgoing: Outgoing, phase: str) -> errors.CommandError:
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


def ssl_error(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind ``exc`` (aiosmtplib wraps the one of implicit TLS), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ssl.SSLError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None

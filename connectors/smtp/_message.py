"""A SendEmail request validated (every bad parameter reported at once) and built into the
message to send.

The message is pure 7-bit MIME (quoted-printable or base64 parts, RFC 2047 headers), so it needs no
8BITMIME or SMTPUTF8 from the server. It gets Date and Message-ID headers. Bcc addresses are
envelope recipients only: no header names them.
"""

from __future__ import annotations

import email.policy
import email.utils
import math
import ssl
from dataclasses import dataclass, field
from email.message import EmailMessage

from spiff.connector.smtp.v1 import smtp_pb2

from server import errors, json_values, log

from ._addresses import CONTROL, parse_addresses
from ._attachments import parse_attachments

__all__ = ["DEFAULT_TIMEOUT", "Outgoing", "prepare"]

DEFAULT_TIMEOUT = 30.0
# Pure 7-bit output: any server takes it, without 8BITMIME or SMTPUTF8.
_POLICY = email.policy.SMTP.clone(cte_type="7bit")


@dataclass(frozen=True)
class Outgoing:
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


def prepare(request: smtp_pb2.SendEmailRequest) -> Outgoing:
    """Validates every parameter (reporting all bad ones at once), then builds the message."""
    bad: list[errors.Violation] = []
    host = request.smtp_host.strip()
    if not host or any(char.isspace() or char in "/@" for char in host) or CONTROL.search(host):
        bad.append(errors.Violation("smtp_host", "must be a host name or IP address"))
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
        except (ssl.SSLError, ValueError, TypeError):  # TypeError: text that is not ASCII
            bad.append(errors.Violation("smtp_tls_ca_cert", "must be PEM text of CA certificates"))
    senders = parse_addresses(request.email_from, "email_from", bad)
    if len(senders) != 1 and not any(v.field.startswith("email_from") for v in bad):
        bad.append(errors.Violation("email_from", "must be exactly one address"))
    to = parse_addresses(json_values.load_parameter(request.email_to, "email_to", bad), "email_to", bad)
    if not to and not any(v.field.startswith("email_to") for v in bad):
        bad.append(errors.Violation("email_to", "must name at least one address"))
    cc = parse_addresses(json_values.load_parameter(request.cc, "cc", bad), "cc", bad)
    bcc = parse_addresses(json_values.load_parameter(request.bcc, "bcc", bad), "bcc", bad)
    reply_to = parse_addresses(json_values.load_parameter(request.reply_to, "reply_to", bad), "reply_to", bad)
    if any(char in request.email_subject for char in "\r\n"):
        bad.append(errors.Violation("email_subject", "must not contain line breaks"))
    attachments = parse_attachments(json_values.load_parameter(request.attachments, "attachments", bad), bad)
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
    return Outgoing(
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

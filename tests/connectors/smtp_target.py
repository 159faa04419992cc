"""Real SMTP servers on 127.0.0.1 for the smtp connector's tests: aiosmtpd Controllers in threads.

A :class:`SmtpTarget` records every message it accepts as a :class:`Delivery` (envelope, raw
content, whether the session used TLS, who logged in, the client's EHLO name). Recipients are
accepted except ``REFUSED`` (550) and ``LATER`` (450). Servers built with ``auth=True`` take
``USER``/``PASSWORD``; aiosmtpd offers AUTH only after STARTTLS unless ``auth_require_tls`` is
False (it does not count implicit TLS, so SMTPS servers need False).
"""

from __future__ import annotations

import email
import email.policy
import socket
import ssl
import threading
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.ports import free_port

USER = "alice"
PASSWORD = "smtp-S3cr3t-pw"
REFUSED = "nobody@example.com"
LATER = "later@example.com"


@dataclass(frozen=True)
class Delivery:
    """One message a target accepted."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    tls: bool
    login: str | None
    ehlo: str

    @property
    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.content, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        return parsed


class _Recorder:
    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 No such user"
        if address == LATER:
            return "450 4.2.1 Mailbox busy, try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        tls = session.ssl is not None or server.transport.get_extra_info("sslcontext") is not None
        login = session.auth_data.login.decode() if session.authenticated else None
        delivery = Delivery(
            envelope.mail_from, list(envelope.rcpt_tos), envelope.content, tls, login, session.host_name
        )
        with self.lock:
            self.deliveries.append(delivery)
        return f"250 2.0.0 Ok: queued as Q{len(self.deliveries)}"


def _authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
    good = (
        isinstance(auth_data, LoginPassword)
        and auth_data.login == USER.encode()
        and auth_data.password == PASSWORD.encode()
    )
    # handled=False: aiosmtpd answers 535 itself (True would leave the client waiting).
    return AuthResult(success=good, handled=False, auth_data=auth_data)


class SmtpTarget:
    """An aiosmtpd server: plain, STARTTLS (``starttls=``) or implicit TLS (``implicit=``).

    Args:
        starttls: a server-side SSLContext to offer STARTTLS with.
        implicit: a server-side SSLContext for SMTPS (TLS from the first byte).
        auth: offer AUTH for USER/PASSWORD.
        auth_require_tls: offer AUTH only after STARTTLS (aiosmtpd's default).
    """

    def __init__(
        self,
        *,
        starttls: ssl.SSLContext | None = None,
        implicit: ssl.SSLContext | None = None,
        auth: bool = False,
        auth_require_tls: bool = True,
    ) -> None:
        self._recorder = _Recorder()
        kwargs: dict[str, Any] = {"auth_require_tls": auth_require_tls}
        if starttls is not None:
            kwargs["tls_context"] = starttls
        if auth:
            kwargs["authenticator"] = _authenticator
        self.port = free_port()
        self._controller = Controller(
            self._recorder,
            hostname="127.0.0.1",
            port=self.port,
            ssl_context=implicit,
            server_hostname="mail.test",
            **kwargs,
        )

    def __enter__(self) -> SmtpTarget:
        self._controller.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._controller.stop()

    def find(self, subject: str) -> list[Delivery]:
        """The deliveries whose Subject is ``subject``."""
        with self._recorder.lock:
            deliveries = list(self._recorder.deliveries)
        return [d for d in deliveries if d.message["Subject"] == subject]


class SilentServer:
    """A port that accepts connections (in the kernel's backlog) but never says a word."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.port: int = self._sock.getsockname()[1]

    def __enter__(self) -> SilentServer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sock.close()

"""The smtp connector: sends one email per call through any SMTP server, with aiosmtplib."""

from __future__ import annotations

from ._service import SmtpService as SmtpService

__all__ = ["SmtpService"]

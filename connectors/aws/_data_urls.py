"""S3 object contents as data URLs: ``data:<media type>[;name=<n>][;base64],<data>``."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any
from urllib.parse import unquote, unquote_to_bytes

from server import errors

__all__ = ["PRINTABLE", "header_value", "parse_data_url"]

_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
PRINTABLE = re.compile(r"[\x20-\x7e]*")


def parse_data_url(text: str, bad: list[errors.Violation]) -> tuple[bytes, str]:
    """The content and Content-Type of ``data:<media type>[;name=<n>][;base64],<data>``."""
    if text[:5].lower() != "data:":
        bad.append(errors.Violation("file_data", "must be a data URL: data:<media type>;base64,<content>"))
        return b"", ""
    header, comma, payload = text[5:].partition(",")
    if not comma:
        bad.append(errors.Violation("file_data", "is a data URL without the comma before its content"))
        return b"", ""
    parts = [part.strip() for part in header.split(";")]
    is_base64 = parts[-1].lower() == "base64"
    if is_base64:
        parts.pop()
    media_type, params = parts[0], [p for p in parts[1:] if p and p.split("=")[0].strip().lower() != "name"]
    if media_type and not _MEDIA_TYPE.fullmatch(media_type):
        bad.append(errors.Violation("file_data", f"has an invalid media type {media_type[:60]!r}"))
        return b"", ""
    if not all(PRINTABLE.fullmatch(p) and "=" in p for p in params):
        bad.append(errors.Violation("file_data", "has an invalid media type parameter"))
        return b"", ""
    if not media_type:
        media_type, params = "text/plain", params or ["charset=US-ASCII"]
    content_type = ";".join([media_type, *params])
    if not is_base64:
        return unquote_to_bytes(payload), content_type
    compact = unquote("".join(payload.split()))
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True), content_type
    except binascii.Error:
        bad.append(errors.Violation("file_data", "has content that is not valid base64"))
        return b"", ""


def header_value(value: Any) -> str:
    return value if isinstance(value, str) and PRINTABLE.fullmatch(value) else ""

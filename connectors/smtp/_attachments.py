"""Attachments as data URLs: ``data:<mime>[;name=<file>][;charset=<cs>][;base64],<data>``, one
string or a list. The name is percent-decoded; unnamed files are ``attachment-<n>.<ext>``."""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import urllib.parse
from typing import Any

from server import errors

from ._addresses import CONTROL

__all__ = ["Attachment", "parse_attachments"]

Attachment = tuple[str, str, dict[str, str], bytes]
"""(filename, mime type, MIME parameters, bytes)."""

_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def parse_attachments(value: Any, bad: list[errors.Violation]) -> list[Attachment]:
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


def _data_url(text: str, index: int) -> Attachment | None:
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
    filename = CONTROL.sub("", filename.replace("\\", "/").rsplit("/", 1)[-1]).strip()
    if not filename:
        filename = f"attachment-{index}{mimetypes.guess_extension(mime) or '.bin'}"
    return filename, mime, params, content

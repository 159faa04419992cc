"""Reading an upstream's answer: its text in the charset it names, and the JSON in that text when
there is some (the connectors that call JSON APIs tell their API's answers from a gateway's page
by it)."""

from __future__ import annotations

import contextlib
from typing import Any

from server import json_values

__all__ = ["json_or_none", "text_of"]


def text_of(content: bytes, charset: str | None) -> str:
    """``content`` decoded with its charset (UTF-8 when it names none, or one Python does not
    know), undecodable bytes replaced."""
    try:
        return content.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return content.decode("utf-8", errors="replace")


def json_or_none(text: str) -> Any:
    """The JSON value ``text`` holds (a byte order mark ignored); None when it is blank or not JSON."""
    with contextlib.suppress(ValueError, RecursionError):
        return json_values.loads(text.removeprefix("\ufeff")) if text.strip() else None
    return None

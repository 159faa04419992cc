"""How a ``/v1/do`` call asks to run asynchronously: ``Prefer: respond-async`` and ``proxy__`` keys."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from rest_shim._schema_json import BOOL_TEXT

__all__ = ["PROXY_PREFIX", "ProxyOptions", "prefers_async", "split_proxy_options"]

logger = logging.getLogger(__name__)

PROXY_PREFIX = "proxy__"
_ASYNC_KEY = "proxy__async"
_BOOL_TEXT = re.compile(BOOL_TEXT)


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def prefers_async(values: Iterable[str]) -> bool:
    """Whether the ``Prefer`` header field(s) ``values`` contain the ``respond-async`` preference.

    RFC 7240: a header holds comma-separated preferences, each a case-insensitive token with an
    optional ``=value`` and ``;parameters`` (quoted strings may contain commas), and the header
    may be repeated. ``respond-async`` takes no value, but one is tolerated.
    """
    for value in values:
        for preference in _split_outside_quotes(value, ","):
            name = preference.split(";", 1)[0].split("=", 1)[0].strip().lower()
            if name == "respond-async":
                return True
    return False


@dataclass
class ProxyOptions:
    """The ``proxy__*`` keys of a request body: what they asked, and what was wrong with them."""

    run_async: bool = False
    logs: list[str] = field(default_factory=list)
    problem: str | None = None


def split_proxy_options(body: dict[str, Any]) -> ProxyOptions:
    """Removes every ``proxy__*`` key from ``body`` (they never reach a command) and reads them.

    ``proxy__async`` must be a boolean or ``"true"``/``"false"`` (any case); other
    ``proxy__*`` keys are unknown to this proxy and ignored, with a log line.
    """
    options = ProxyOptions()
    for key in [k for k in body if k.startswith(PROXY_PREFIX)]:
        value = body.pop(key)
        if key == _ASYNC_KEY:
            if isinstance(value, str) and _BOOL_TEXT.fullmatch(value):
                value = value.strip().lower() == "true"
            if isinstance(value, bool):
                options.run_async = value
            elif value is not None:
                options.problem = f"{_ASYNC_KEY} must be true or false, not {type(value).__name__} {value!r}."
        else:
            line = f"Ignored reserved parameter {key!r}: this proxy does not know it."
            logger.info("%s", line)
            options.logs.append(line)
    return options

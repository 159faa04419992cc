"""A command's parameters from the command line, httpie's way: ``key=text`` and ``key:=json``."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

__all__ = ["parse_body", "parse_items"]


def _json(text: str, what: str) -> Any:
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except ValueError as exc:
        msg = f"{what} is not JSON: {exc}"
        raise ValueError(msg) from None


def _no_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        msg = f"the number {text[:40]} is out of range"
        raise ValueError(msg)
    return number


def parse_items(items: Sequence[str]) -> dict[str, Any]:
    """``["url=https://x/", "attempts:=3"]`` → ``{"url": "https://x/", "attempts": 3}``.

    ``key=value`` gives the text ``value``; ``key:=value`` the JSON ``value`` (a number, ``true``,
    ``null``, a list or an object). A later item with the same key wins.

    Raises:
        ValueError: an item has no ``=``, an empty key, or ``:=`` with text that is not JSON.
    """
    result: dict[str, Any] = {}
    for item in items:
        equals = item.find("=")
        if equals == -1:
            msg = f"{item!r} is neither key=text nor key:=json"
            raise ValueError(msg)
        typed = equals > 0 and item[equals - 1] == ":"
        key = item[: equals - 1] if typed else item[:equals]
        if not key:
            msg = f"{item!r} has no parameter name before the ="
            raise ValueError(msg)
        text = item[equals + 1 :]
        result[key] = _json(text, f"the value of {key}") if typed else text
    return result


def parse_body(text: str | None, items: Sequence[str]) -> dict[str, Any]:
    """The request body: the JSON object ``text`` (when given), with ``items`` over it.

    Raises:
        ValueError: ``text`` is not a JSON object, or an item is malformed.
    """
    body: dict[str, Any] = {}
    if text is not None:
        parsed = _json(text, "--json")
        if not isinstance(parsed, dict):
            msg = '--json must be a JSON object, e.g. \'{"message": "hi"}\''
            raise ValueError(msg)
        body = parsed
    return {**body, **parse_items(items)}

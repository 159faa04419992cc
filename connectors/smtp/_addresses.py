"""Email addresses as parameters give them: a string of addresses separated by commas or semicolons
(outside quotes and angle brackets), or a list of such strings.

``Ann <ann@example.com>`` keeps its display name. Domains may be Unicode (IDNA-encoded here); local
parts must be ASCII.
"""

from __future__ import annotations

import email.errors
import re
from email.headerregistry import Address
from typing import Any

from server import errors

__all__ = ["CONTROL", "parse_addresses"]

# Control characters: refused in host names, addresses and attachment file names.
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ADDR_SPEC = re.compile(r"[^\s@<>()\[\]\\,;:\"]+@[^\s@<>()\[\]\\,;:\"]+")
_ANGLE = re.compile(r"(?P<name>.*?)\s*<(?P<addr>[^<>]*)>", re.DOTALL)


def parse_addresses(value: Any, name: str, bad: list[errors.Violation]) -> list[Address]:
    """Addresses from a string of comma/semicolon-separated ones, or a list of such strings."""
    if value is None:
        return []
    if isinstance(value, str):
        items = [(name, value)]
    elif isinstance(value, list):
        items = [(f"{name}[{i}]", item) for i, item in enumerate(value)]
    else:
        bad.append(errors.Violation(name, "must be a string of addresses or a list of addresses"))
        return []
    found: list[Address] = []
    for path, item in items:
        if not isinstance(item, str):
            bad.append(errors.Violation(path, "must be a string"))
            continue
        for piece in _split(item):
            address = _address(piece)
            if address is None:
                bad.append(errors.Violation(path, f"{piece!r} is not an email address"))
            else:
                found.append(address)
    return found


def _split(text: str) -> list[str]:
    """``text`` split at commas and semicolons outside quotes and angle brackets."""
    pieces: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    depth = 0
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(depth - 1, 0)
        elif not quoted and depth == 0 and char in ",;":
            pieces.append("".join(current))
            current = []
            continue
        current.append(char)
    pieces.append("".join(current))
    return [piece.strip() for piece in pieces if piece.strip()]


def _address(piece: str) -> Address | None:
    """``addr@example.com`` or ``Display Name <addr@example.com>``; None when it is neither."""
    if CONTROL.search(piece):
        return None
    angle = _ANGLE.fullmatch(piece)
    name, addr = (angle["name"].strip(), angle["addr"].strip()) if angle else ("", piece)
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = re.sub(r"\\(.)", r"\1", name[1:-1])
    if not _ADDR_SPEC.fullmatch(addr):
        return None
    local, _, domain = addr.rpartition("@")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
        return Address(display_name=name, addr_spec=f"{local}@{ascii_domain}")
    except (UnicodeError, ValueError, IndexError, email.errors.HeaderParseError):
        return None

"""MySQL column types: the strict grammar CreateTableV2 accepts, rebuilt from its tokens.

A type name with (n), (n, m) or ('a', 'b'), then NOT NULL, NULL, PRIMARY KEY, UNIQUE [KEY],
AUTO_INCREMENT, DEFAULT <literal or CURRENT_TIMESTAMP[(n)]>, ON UPDATE CURRENT_TIMESTAMP[(n)],
CHARACTER SET, COLLATE, COMMENT 'text', REFERENCES t [(c)] [ON DELETE|UPDATE <action>]. Anything
else (CHECK, generated columns, expressions) is refused: DoSQL can run it.
"""

from __future__ import annotations

import re
from typing import Any

from connectors._sql.column_types import Refused, TypeParser, rebuild
from server import errors

__all__ = ["column_type"]

_TYPE_TOKEN = re.compile(
    r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>[+-]?\d+(?:\.\d+)?)"
    r"|(?P<string>'(?:[^'\\]|'')*')"
    r"|(?P<punct>[(),]))"
)
_ATTRIBUTE_WORDS = frozenset(
    {
        *("NOT", "NULL", "PRIMARY", "UNIQUE", "KEY", "AUTO_INCREMENT", "DEFAULT", "ON", "CHARSET"),
        *("COLLATE", "COMMENT", "REFERENCES", "CHECK", "CONSTRAINT", "GENERATED", "AS", "INVISIBLE"),
        *("VISIBLE", "STORED", "VIRTUAL", "PERSISTENT", "SERIAL"),
    }
)
_DEFAULT_KEYWORDS = frozenset({"TRUE", "FALSE", "NULL"})
_CLOCKS = frozenset({"CURRENT_TIMESTAMP", "NOW", "LOCALTIMESTAMP"})
_TYPE_HELP = (
    "must be a column type: a type name with optional (n), (n, m) or ('a', 'b'), then any of NOT NULL, "
    "NULL, PRIMARY KEY, UNIQUE [KEY], AUTO_INCREMENT, DEFAULT <number, 'text', TRUE, FALSE, NULL, "
    "CURRENT_TIMESTAMP[(n)]>, ON UPDATE CURRENT_TIMESTAMP[(n)], CHARACTER SET, COLLATE, COMMENT 'text', "
    "REFERENCES table [(column)] [ON DELETE|UPDATE action]; use DoSQL for anything else"
)


class _Grammar(TypeParser):
    """MySQL's (and MariaDB's) column types, as far as CreateTableV2 accepts them."""

    token = _TYPE_TOKEN
    help = _TYPE_HELP

    def parse(self) -> str:
        words = 0
        while self._at("word") and not self._attribute_starts():
            self.out.append(self._take())
            words += 1
            if self._at("punct", "("):
                self._arguments()
        if not words:
            raise Refused
        while self.pos < len(self.tokens):
            self._attribute()
        return " ".join(self.out)

    def _attribute_starts(self) -> bool:
        word = self.tokens[self.pos][1].upper()
        if word == "CHARACTER":  # CHARACTER SET x, but also the type CHARACTER VARYING
            return self.pos + 1 < len(self.tokens) and self.tokens[self.pos + 1][1].upper() == "SET"
        return word in _ATTRIBUTE_WORDS

    def _attribute(self) -> None:
        word = self._expect("word").upper()
        self.out.append(word)
        if word == "NOT":
            self._keywords("NULL")
        elif word == "PRIMARY":
            self._keywords("KEY")
        elif word == "UNIQUE":
            if self._at("word", "KEY"):
                self._keywords("KEY")
        elif word == "DEFAULT":
            if self._at("number") or self._at("string"):
                self.out.append(self._take())
            elif self._at("word", *_DEFAULT_KEYWORDS):
                self.out.append(self._take().upper())
            else:
                self._clock()
        elif word == "ON":
            self._keywords("UPDATE")
            self._clock()
        elif word == "CHARACTER":
            self._keywords("SET")
            self.out.append(self._expect("word"))
        elif word in ("CHARSET", "COLLATE"):
            self.out.append(self._expect("word"))
        elif word == "COMMENT":
            self.out.append(self._expect("string"))
        elif word == "REFERENCES":
            self._references()
        elif word not in ("NULL", "AUTO_INCREMENT"):
            raise Refused

    def _clock(self) -> None:
        name = self._expect("word", *_CLOCKS).upper()
        if self._at("punct", "("):
            self._take()
            digits = self._take() if self._at("number") and self._text().isdigit() else ""
            self._expect("punct", ")")
            name += f"({digits})"
        self.out.append(name)

    def _arguments(self) -> None:
        self._take()
        kind = "string" if self._at("string") else "number"
        items = [self._expect(kind)]
        while self._at("punct", ","):
            self._take()
            items.append(self._expect(kind))
        self._expect("punct", ")")
        if kind == "number" and (len(items) > 2 or not all(item.isdigit() for item in items)):
            raise Refused
        self.out[-1] += f"({', '.join(items)})"


def column_type(text: Any, path: str, bad: list[errors.Violation]) -> str | None:
    """The column type rebuilt from the tokens of the strict grammar, or None (and a violation)."""
    rebuilt = rebuild(_Grammar, text, path, bad)
    # % is doubled: PyMySQL %-formats every statement this connector builds.
    return rebuilt.replace("%", "%%") if rebuilt is not None else None

"""PostgreSQL column types: the strict grammar CreateTableV2 accepts, rebuilt from its tokens.

A type name with (n[, m]) and [] suffixes, then NOT NULL, NULL, PRIMARY KEY, UNIQUE, DEFAULT
<literal or now() and friends>, GENERATED ... AS IDENTITY, REFERENCES t [(c)] [ON DELETE|UPDATE
<action>]. Anything else (CHECK, COLLATE, expressions) is refused: DoSQL can run it.
"""

from __future__ import annotations

import re
from typing import Any

from connectors._sql.column_types import Refused, TypeParser, rebuild
from server import errors

__all__ = ["column_type"]

_TYPE_TOKEN = re.compile(
    r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)"
    r"|(?P<number>[+-]?\d+(?:\.\d+)?)"
    r"|(?P<string>'(?:[^'\\]|'')*')"
    r"|(?P<punct>[(),\[\]]))"
)
_CONSTRAINT_WORDS = frozenset(
    {
        "NOT",
        "NULL",
        "PRIMARY",
        "UNIQUE",
        "DEFAULT",
        "REFERENCES",
        "GENERATED",
        "CHECK",
        "CONSTRAINT",
        "COLLATE",
    }
)
_DEFAULT_KEYWORDS = frozenset(
    {
        "TRUE",
        "FALSE",
        "NULL",
        "CURRENT_DATE",
        "CURRENT_TIME",
        "CURRENT_TIMESTAMP",
        "LOCALTIME",
        "LOCALTIMESTAMP",
    }
)
_DEFAULT_FUNCTIONS = frozenset({"NOW", "GEN_RANDOM_UUID"})
_TYPE_HELP = (
    "must be a column type: a type name with optional (n) or (n, m) and [], then any of NOT NULL, NULL, "
    "PRIMARY KEY, UNIQUE, DEFAULT <number, 'text', TRUE, FALSE, NULL, CURRENT_TIMESTAMP, now(), "
    "gen_random_uuid()...>, GENERATED ALWAYS|BY DEFAULT AS IDENTITY, REFERENCES table [(column)] "
    "[ON DELETE|UPDATE action]; use DoSQL for anything else"
)


class _Grammar(TypeParser):
    """PostgreSQL's column types, as far as CreateTableV2 accepts them."""

    token = _TYPE_TOKEN
    help = _TYPE_HELP

    def parse(self) -> str:
        words = 0
        while self._at("word") and self._text().upper() not in _CONSTRAINT_WORDS:
            self.out.append(self._take())
            words += 1
            if self._at("punct", "("):
                self._modifiers()
        if not words:
            raise Refused
        while self._at("punct", "["):
            self._take()
            size = self._take() if self._at("number") and self._text().isdigit() else ""
            self._expect("punct", "]")
            self.out[-1] += f"[{size}]"
        while self.pos < len(self.tokens):
            self._constraint()
        return " ".join(self.out)

    def _constraint(self) -> None:
        if self._at("word", "NOT"):
            self._keywords("NOT", "NULL")
        elif self._at("word", "NULL", "UNIQUE"):
            self._keywords(self._text().upper())
        elif self._at("word", "PRIMARY"):
            self._keywords("PRIMARY", "KEY")
        elif self._at("word", "DEFAULT"):
            self._keywords("DEFAULT")
            self._default()
        elif self._at("word", "GENERATED"):
            self._keywords("GENERATED")
            if self._at("word", "ALWAYS"):
                self._keywords("ALWAYS")
            else:
                self._keywords("BY", "DEFAULT")
            self._keywords("AS", "IDENTITY")
        elif self._at("word", "REFERENCES"):
            self._keywords("REFERENCES")
            self._references()
        else:
            raise Refused

    def _default(self) -> None:
        if self._at("number") or self._at("string") or self._at("word", *_DEFAULT_KEYWORDS):
            text = self._take()
            self.out.append(text.upper() if text[0].isalpha() else text)
        elif self._at("word", *_DEFAULT_FUNCTIONS):
            name = self._take().lower()
            self._expect("punct", "(")
            self._expect("punct", ")")
            self.out.append(f"{name}()")
        else:
            raise Refused

    def _modifiers(self) -> None:
        self._take()
        numbers = [self._integer()]
        if self._at("punct", ","):
            self._take()
            numbers.append(self._integer())
        self._expect("punct", ")")
        self.out[-1] += f"({', '.join(numbers)})"

    def _integer(self) -> str:
        if not (self._at("number") and self._text().isdigit()):
            raise Refused
        return self._take()


def column_type(text: Any, path: str, bad: list[errors.Violation]) -> str | None:
    """The column type rebuilt from the tokens of the strict grammar, or None (and a violation)."""
    return rebuild(_Grammar, text, path, bad)

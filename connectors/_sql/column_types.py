"""The shape of the strict column-type grammars: tokens in, the type rebuilt from them out.

Column types cannot be bound values, so CreateTableV2 accepts only what a dialect's grammar (a
``TypeParser`` subclass) reads, and writes out the text again from the tokens it read: nothing
the caller wrote reaches the statement unread.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from server import errors

__all__ = ["Refused", "TypeParser", "rebuild"]


class Refused(Exception):
    """The text is not in the grammar."""


class TypeParser:
    """Reads a column type token by token, writing out only what the grammar allows."""

    token: ClassVar[re.Pattern[str]]
    """One token (after any spaces), in a group named after its kind: word, number, string, punct."""

    help: ClassVar[str]
    """The violation's description: the grammar in words."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.out: list[str] = []

    def parse(self) -> str:
        """The type rebuilt, or Refused."""
        raise NotImplementedError

    def _references(self) -> None:
        """After REFERENCES, as standard SQL has it: table [(column)] [ON DELETE|UPDATE action]..."""
        self.out.append(self._expect("word"))
        if self._at("punct", "("):
            self._take()
            self.out[-1] += f"({self._expect('word')})"
            self._expect("punct", ")")
        while self._at("word", "ON"):
            self._keywords("ON")
            self.out.append(self._expect("word", "DELETE", "UPDATE").upper())
            self._action()

    def _action(self) -> None:
        if self._at("word", "CASCADE", "RESTRICT"):
            self._keywords(self._text().upper())
        elif self._at("word", "SET"):
            self._keywords("SET")
            self.out.append(self._expect("word", "NULL", "DEFAULT").upper())
        else:
            self._keywords("NO", "ACTION")

    def _keywords(self, *words: str) -> None:
        for word in words:
            self._expect("word", word)
            self.out.append(word)

    def _at(self, kind: str, *words: str) -> bool:
        if self.pos >= len(self.tokens) or self.tokens[self.pos][0] != kind:
            return False
        return not words or self.tokens[self.pos][1].upper() in words

    def _text(self) -> str:
        return self.tokens[self.pos][1]

    def _take(self) -> str:
        text = self._text()
        self.pos += 1
        return text

    def _expect(self, kind: str, *words: str) -> str:
        if not self._at(kind, *words):
            raise Refused
        return self._take()


def rebuild(parser: type[TypeParser], text: Any, path: str, bad: list[errors.Violation]) -> str | None:
    """The column type rebuilt by the parser's grammar, or None (and a violation in ``bad``)."""
    tokens: list[tuple[str, str]] = []
    if isinstance(text, str):
        text = text.strip()
        pos = 0
        while pos < len(text):
            match = parser.token.match(text, pos)
            if match is None or match.lastgroup is None:
                tokens = []
                break
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
    try:
        if not tokens:
            raise Refused
        return parser(tokens).parse()
    except (Refused, IndexError):
        bad.append(errors.Violation(path, parser.help))
        return None

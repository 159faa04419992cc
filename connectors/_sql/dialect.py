"""The few things the SQL connectors' databases differ in when statements are built."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

from server import errors

__all__ = ["COMPARISONS", "OPERATORS", "Dialect", "Fragment", "name_text"]

Fragment = TypeVar("Fragment")
"""A piece of a statement: ``psycopg.sql.Composable`` for PostgreSQL, ``str`` for MySQL."""

COMPARISONS: Mapping[str, str] = {
    "=": "{} = %s",
    "!=": "{} <> %s",
    "<>": "{} <> %s",
    "<": "{} < %s",
    "<=": "{} <= %s",
    ">": "{} > %s",
    ">=": "{} >= %s",
    "like": "{} LIKE %s",
    "not like": "{} NOT LIKE %s",
    "ilike": "{} ILIKE %s",
    "not ilike": "{} NOT ILIKE %s",
}
"""The where operators that compare a column (``{}``) with one value (``%s``), in standard SQL."""

OPERATORS = (*COMPARISONS, "in", "not in", "is", "is not")


class Dialect(Protocol[Fragment]):
    """A database's identifiers, column types, parameters and statement text.

    Statements are built from templates with ``{}`` for fragments and ``%s`` for values: both
    drivers use ``%s`` placeholders. Nothing the caller wrote is ever part of a template.
    """

    comparisons: Mapping[str, str]
    """``COMPARISONS``, with this database's spelling where it differs (same keys, same order)."""

    no_limit: int | None
    """The LIMIT that stands in for "all rows" when only an OFFSET is given, if one must."""

    def identifier(self, text: Any, path: str, bad: list[errors.Violation]) -> Fragment | None:
        """A table or column name, quoted; None (and a violation in ``bad``) if it is not one."""
        ...

    def identifiers(self, items: Any, path: str, bad: list[errors.Violation]) -> list[Fragment] | None:
        """A non-empty list of column names, quoted; None (and a violation) if it is not a list."""
        ...

    def column_type(self, text: Any, path: str, bad: list[errors.Violation]) -> str | None:
        """A column type rebuilt from the dialect's strict grammar; None (and a violation) if refused."""
        ...

    def param(self, value: Any) -> Any:
        """A JSON value as the driver takes it for a ``%s``."""
        ...

    def sql(self, text: str) -> Fragment:
        """Text taken as SQL as it is: a template's pieces, a rebuilt column type, DoSQL's statement."""
        ...

    def format(self, template: str, *parts: Fragment) -> Fragment:
        """The template with its ``{}`` replaced by the parts, in order."""
        ...

    def join(self, separator: str, parts: Sequence[Fragment]) -> Fragment:
        """The parts with the separator between them."""
        ...


def name_text(text: Any, path: str, bad: list[errors.Violation]) -> str | None:
    """What a dialect's ``identifier`` quotes: a non-empty string without NUL characters, or None
    (and a violation in ``bad``)."""
    if not isinstance(text, str) or not text:
        bad.append(errors.Violation(path, "must be a non-empty name"))
        return None
    if "\x00" in text:
        bad.append(errors.Violation(path, "must not contain NUL characters"))
        return None
    return text

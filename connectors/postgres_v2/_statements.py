"""PostgreSQL's statement dialect: identifiers, bound values and column types.

identifiers   table and column names are always quoted (``psycopg.sql.Identifier``). A plain
              name (``[A-Za-z_][A-Za-z0-9_$]*``) is folded to lower case, which is what PostgreSQL
              did with the old connector's unquoted names; a ``"Quoted"`` name keeps its case;
              ``a.b`` qualifies; anything else (``x; DROP TABLE y``) is one verbatim name, which at
              worst does not exist.
values        always bound parameters: an object becomes jsonb, a list an array.
column types  see ``_types``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from psycopg.sql import SQL, Composed, Identifier
from psycopg.types.json import Jsonb

from connectors._sql.dialect import COMPARISONS, name_text
from server import errors

from ._types import column_type

__all__ = ["DIALECT", "Fragment"]

Fragment = SQL | Composed  # what psycopg's execute takes; an identifier is wrapped in a Composed

_PLAIN = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUOTED = r'"(?:[^"]|"")+"'
_PART = re.compile(rf"{_PLAIN}|{_QUOTED}")
_QUALIFIED = re.compile(rf"(?:{_PLAIN}|{_QUOTED})(?:\.(?:{_PLAIN}|{_QUOTED})){{0,2}}")


class _Postgres:
    """Statements as ``psycopg.sql`` composables, which psycopg renders with the connection's quoting."""

    comparisons = COMPARISONS
    no_limit: int | None = None

    def identifier(self, text: Any, path: str, bad: list[errors.Violation]) -> Composed | None:
        """A table or column name as a quoted identifier (see the module docstring for the rules)."""
        name = name_text(text, path, bad)
        if name is None:
            return None
        if _QUALIFIED.fullmatch(name):
            parts = [
                p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in _PART.findall(name)
            ]
            return Composed([Identifier(*parts)])
        return Composed([Identifier(name)])

    def identifiers(self, items: Any, path: str, bad: list[errors.Violation]) -> list[Fragment] | None:
        """The names that are names (so a row of values is checked against the good ones only)."""
        if not isinstance(items, list) or not items:
            bad.append(errors.Violation(path, "must be a non-empty list of column names"))
            return None
        found = [self.identifier(item, f"{path}[{i}]", bad) for i, item in enumerate(items)]
        return [ident for ident in found if ident is not None]

    def column_type(self, text: Any, path: str, bad: list[errors.Violation]) -> str | None:
        return column_type(text, path, bad)

    def param(self, value: Any) -> Any:
        """A JSON value as a bound parameter: objects as jsonb, lists as arrays, the rest as is."""
        if isinstance(value, dict):
            return Jsonb(value)
        if isinstance(value, list):
            return [self.param(item) for item in value]
        return value

    def sql(self, text: str) -> Fragment:
        return SQL(text)

    def format(self, template: str, *parts: Fragment) -> Fragment:
        return SQL(template).format(*parts)

    def join(self, separator: str, parts: Sequence[Fragment]) -> Fragment:
        return SQL(separator).join(parts)


DIALECT = _Postgres()

"""MySQL's statement dialect: backtick-quoted identifiers, client-escaped values, column types.

identifiers   quoted with backticks and never case-folded (MySQL does not fold names; whether
              table names are case-sensitive is the server's lower_case_table_names); ``db.table``
              qualifies; anything else (``x; DROP TABLE y``) is one verbatim name.
values        escaped by PyMySQL on the client (MySQL's text protocol has no bound parameters):
              objects and lists become JSON text, booleans 1 and 0. PyMySQL %-formats every
              statement this connector builds, so a ``%`` in a name or a column type is doubled.
ilike         ``LOWER(column) LIKE LOWER(value)``.
offset        MySQL has no OFFSET without LIMIT: the largest LIMIT stands in.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from connectors._sql.dialect import COMPARISONS, name_text
from server import errors, json_values

from ._types import column_type

__all__ = ["DIALECT"]

_PART = r"[A-Za-z0-9_$]+|`(?:[^`]|``)+`"
_PARTS = re.compile(_PART)
_QUALIFIED = re.compile(rf"(?:{_PART})(?:\.(?:{_PART}))?")


def _quote(name: str) -> str:
    # % is doubled because PyMySQL %-formats the statement with the escaped values.
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


class _Mysql:
    """Statements as text, with ``%s`` where PyMySQL escapes the values in."""

    comparisons: Mapping[str, str] = {
        **COMPARISONS,
        "ilike": "LOWER({}) LIKE LOWER(%s)",
        "not ilike": "LOWER({}) NOT LIKE LOWER(%s)",
    }
    no_limit: int | None = 2**64 - 1

    def identifier(self, text: Any, path: str, bad: list[errors.Violation]) -> str | None:
        """A table or column name quoted with backticks (see the module docstring for the rules)."""
        name = name_text(text, path, bad)
        if name is None:
            return None
        if _QUALIFIED.fullmatch(name):
            parts = [p[1:-1].replace("``", "`") if p.startswith("`") else p for p in _PARTS.findall(name)]
            return ".".join(_quote(part) for part in parts)
        return _quote(name)

    def identifiers(self, items: Any, path: str, bad: list[errors.Violation]) -> list[str] | None:
        """One per item, good or not (so a row of values is checked against every column named)."""
        if not isinstance(items, list) or not items:
            bad.append(errors.Violation(path, "must be a non-empty list of column names"))
            return None
        return [self.identifier(item, f"{path}[{i}]", bad) or "``" for i, item in enumerate(items)]

    def column_type(self, text: Any, path: str, bad: list[errors.Violation]) -> str | None:
        return column_type(text, path, bad)

    def param(self, value: Any) -> Any:
        """A JSON value for PyMySQL to escape: objects and lists as their JSON text."""
        if isinstance(value, dict | list):
            return json_values.dumps(value)
        return value

    def sql(self, text: str) -> str:
        return text

    def format(self, template: str, *parts: str) -> str:
        return template.format(*parts)

    def join(self, separator: str, parts: Sequence[str]) -> str:
        return separator.join(parts)


DIALECT = _Mysql()

"""Each command's parameters, checked, and built into a ``Plan`` in a ``Dialect``.

Every builder collects all the violations of a request, then raises InvalidParameters with all of
them; only a request without any is built. Values are always ``%s`` parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic

from server import errors, json_values, log

from .dialect import OPERATORS, Dialect, Fragment

__all__ = [
    "DEFAULT_STATEMENT_TIMEOUT_MS",
    "Plan",
    "create_table",
    "delete_values",
    "do_sql",
    "drop_table",
    "insert_values",
    "select_values",
    "update_values",
]

DEFAULT_STATEMENT_TIMEOUT_MS = 30_000

_KEYWORD_VALUES: dict[Any, str] = {None: "NULL", True: "TRUE", False: "FALSE"}


@dataclass(frozen=True)
class Plan(Generic[Fragment]):
    """One statement to run, with its values, in one transaction."""

    query: Fragment
    params: Sequence[Any] | Mapping[str, Any] | None = None
    many: list[list[Any]] | None = None  # executemany: one list of values per row
    fetch: bool = False
    verbatim: bool = False  # the caller's own SQL (DoSQL), not built by the connector
    timeout_ms: int = DEFAULT_STATEMENT_TIMEOUT_MS


def create_table(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    schema = _schema(request.schema, bad)
    definitions = schema.get("column_definitions")
    columns: list[Fragment] = []
    if not isinstance(definitions, list) or not definitions:
        bad.append(errors.Violation("schema.column_definitions", "must be a non-empty list of {name, type}"))
    else:
        for i, item in enumerate(definitions):
            path = f"schema.column_definitions[{i}]"
            if not isinstance(item, dict):
                bad.append(errors.Violation(path, "must be an object {name, type}"))
                continue
            name = d.identifier(item.get("name"), f"{path}.name", bad)
            kind = d.column_type(item.get("type"), f"{path}.type", bad)
            if name is not None and kind is not None:
                columns.append(d.format("{} {}", name, d.sql(kind)))
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    query = d.format("CREATE TABLE IF NOT EXISTS {} ({})", table, d.join(", ", columns))
    return Plan(query, timeout_ms=timeout_ms)


def drop_table(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    return Plan(d.format("DROP TABLE IF EXISTS {}", table), timeout_ms=timeout_ms)


def insert_values(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    schema = _schema(request.schema, bad)
    columns = d.identifiers(schema.get("columns"), "schema.columns", bad)
    rows = schema.get("values")
    params: list[list[Any]] = []
    if not isinstance(rows, list):
        bad.append(errors.Violation("schema.values", "must be a list of rows, each a list of values"))
    else:
        for i, row in enumerate(rows):
            if not isinstance(row, list) or (columns is not None and len(row) != len(columns)):
                width = len(columns) if columns is not None else "as many"
                description = f"must be a list of {width} values, one per column"
                bad.append(errors.Violation(f"schema.values[{i}]", description))
            else:
                params.append([d.param(value) for value in row])
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    assert columns is not None  # noqa: S101 - _check raised otherwise
    marks = ", ".join(["%s"] * len(columns))
    template = f"INSERT INTO {{}} ({{}}) VALUES ({marks})"  # noqa: S608 - names are fragments, values %s
    query = d.format(template, table, d.join(", ", columns))
    return Plan(query, many=params, timeout_ms=timeout_ms)


def select_values(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    schema = _schema(request.schema, bad)
    wanted = schema.get("columns")
    if wanted is None or wanted == [] or wanted == ["*"]:
        selected = d.sql("*")
    else:
        selected = d.join(", ", d.identifiers(wanted, "schema.columns", bad) or [])
    where, params = _where(d, schema.get("where"), bad)
    tail = _order_and_limit(d, schema, bad, params)
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    query = d.format("SELECT {} FROM {}{}{}", selected, table, where, tail)
    return Plan(query, params, fetch=True, timeout_ms=timeout_ms)


def update_values(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    schema = _schema(request.schema, bad)
    changes = schema.get("set")
    assignments: list[Fragment] = []
    params: list[Any] = []
    if not isinstance(changes, dict) or not changes:
        bad.append(errors.Violation("schema.set", "must be a non-empty object of columns to values"))
    else:
        for name, value in changes.items():
            column = d.identifier(name, f"schema.set.{name}", bad)
            if column is not None:
                assignments.append(d.format("{} = %s", column))
                params.append(d.param(value))
    where, where_params = _where(d, schema.get("where"), bad)
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    if not schema.get("where"):
        log("No where: every row is updated.")
    query = d.format("UPDATE {} SET {}{}", table, d.join(", ", assignments), where)
    return Plan(query, params + where_params, timeout_ms=timeout_ms)


def delete_values(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    table = d.identifier(request.table_name, "table_name", bad)
    schema = _schema(request.schema, bad)
    where, params = _where(d, schema.get("where"), bad)
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert table is not None  # noqa: S101 - _check raised otherwise
    if not schema.get("where"):
        log("No where: every row is deleted.")
    return Plan(d.format("DELETE FROM {}{}", table, where), params, timeout_ms=timeout_ms)


def do_sql(d: Dialect[Fragment], request: Any) -> Plan[Fragment]:
    bad: list[errors.Violation] = []
    schema = _schema(request.schema, bad)
    text = schema.get("sql")
    if not isinstance(text, str) or not text.strip():
        bad.append(errors.Violation("schema.sql", "must be a non-empty SQL statement"))
    values = schema.get("values")
    params: list[Any] | dict[str, Any] | None = None
    if isinstance(values, list):
        params = [d.param(value) for value in values] if values else None
    elif isinstance(values, dict):
        params = {str(key): d.param(value) for key, value in values.items()} if values else None
    elif values is not None:
        bad.append(errors.Violation("schema.values", "must be a list (for %s) or an object (for %(name)s)"))
    fetch = schema.get("fetch_results", False)
    if not isinstance(fetch, bool):
        bad.append(errors.Violation("schema.fetch_results", "must be true or false"))
    timeout_ms = _timeout(request, bad)
    _check(bad)
    assert isinstance(text, str)  # noqa: S101 - _check raised otherwise
    return Plan(d.sql(text), params, fetch=fetch, verbatim=True, timeout_ms=timeout_ms)


# --- parts ------------------------------------------------------------------------------------------


def _check(bad: list[errors.Violation]) -> None:
    if bad:
        names = ", ".join(dict.fromkeys(v.field for v in bad))
        msg = f"Invalid parameters: {names}."
        raise errors.InvalidParameters(msg, violations=bad)


def _timeout(request: Any, bad: list[errors.Violation]) -> int:
    """statement_timeout_ms (every request has it; its range is declared in the proto)."""
    if not request.HasField("statement_timeout_ms"):
        return DEFAULT_STATEMENT_TIMEOUT_MS
    wanted: int = request.statement_timeout_ms
    return wanted


def _schema(value: Any, bad: list[errors.Violation]) -> dict[str, Any]:
    schema = json_values.load(value)
    if isinstance(schema, dict):
        return schema
    bad.append(errors.Violation("schema", "must be a JSON object"))
    return {}


def _where(d: Dialect[Fragment], items: Any, bad: list[errors.Violation]) -> tuple[Fragment, list[Any]]:
    """`` WHERE c1 AND c2 ...`` from ``[[column, operator, value], ...]``, and its values."""
    if items is None or items == []:
        return d.sql(""), []
    if not isinstance(items, list):
        bad.append(errors.Violation("schema.where", "must be a list of [column, operator, value]"))
        return d.sql(""), []
    conditions: list[Fragment] = []
    params: list[Any] = []
    for i, item in enumerate(items):
        path = f"schema.where[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            bad.append(errors.Violation(path, "must be [column, operator, value]"))
            continue
        name, operator, value = item
        column = d.identifier(name, f"{path}[0]", bad)
        if column is None:
            column = d.sql("?")  # never run: _check raises
        op = " ".join(operator.lower().split()) if isinstance(operator, str) else ""
        if op in ("=", "!=", "<>") and value is None:
            op = "is" if op == "=" else "is not"
        if op in d.comparisons:
            conditions.append(d.format(d.comparisons[op], column))
            params.append(d.param(value))
        elif op in ("in", "not in"):
            if not isinstance(value, list):
                bad.append(errors.Violation(f"{path}[2]", f"must be a list for {op}"))
            elif not value:  # IN () is not SQL: nothing is in an empty list
                conditions.append(d.sql("FALSE" if op == "in" else "TRUE"))
            else:
                marks = ", ".join(["%s"] * len(value))
                conditions.append(d.format(f"{{}} {op.upper()} ({marks})", column))
                params.extend(d.param(v) for v in value)
        elif op in ("is", "is not"):
            if value is None or isinstance(value, bool):
                conditions.append(d.format(f"{{}} {op.upper()} {_KEYWORD_VALUES[value]}", column))
            else:
                bad.append(errors.Violation(f"{path}[2]", f"must be null, true or false for {op}"))
        else:
            bad.append(errors.Violation(f"{path}[1]", f"must be one of {', '.join(OPERATORS)}"))
    if not conditions:
        return d.sql(""), []
    return d.format(" WHERE {}", d.join(" AND ", conditions)), params


def _order_and_limit(
    d: Dialect[Fragment], schema: dict[str, Any], bad: list[errors.Violation], params: list[Any]
) -> Fragment:
    """`` ORDER BY ... LIMIT %s OFFSET %s`` from schema.order_by, limit and offset (appends to params)."""
    parts: list[Fragment] = []
    order = schema.get("order_by")
    if order is not None and order != []:
        keys: list[Fragment] = []
        if not isinstance(order, list):
            bad.append(
                errors.Violation("schema.order_by", "must be a list of columns or [column, direction]")
            )
            order = []
        for i, item in enumerate(order):
            path = f"schema.order_by[{i}]"
            if isinstance(item, str):
                name, direction = item, "ASC"
            elif (
                isinstance(item, list)
                and len(item) == 2
                and isinstance(item[1], str)
                and item[1].upper() in ("ASC", "DESC")
            ):
                name, direction = item[0], item[1].upper()
            else:
                bad.append(errors.Violation(path, 'must be a column or [column, "asc" or "desc"]'))
                continue
            column = d.identifier(name, path, bad)
            if column is not None:
                keys.append(d.format(f"{{}} {direction}", column))
        if keys:
            parts.append(d.format(" ORDER BY {}", d.join(", ", keys)))
    limits: dict[str, int] = {}
    for key in ("limit", "offset"):
        value = schema.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad.append(errors.Violation(f"schema.{key}", "must be a whole number of at least 0"))
        else:
            limits[key] = value
    if "limit" in limits or ("offset" in limits and d.no_limit is not None):
        parts.append(d.sql(" LIMIT %s"))
        params.append(limits.get("limit", d.no_limit))
    if "offset" in limits:
        parts.append(d.sql(" OFFSET %s"))
        params.append(limits["offset"])
    return d.join("", parts)

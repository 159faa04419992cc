"""The mysql connector: MySQL and MariaDB tables and SQL over aiomysql, one pool per server and user.

The twin of postgres_v2: the same command names, parameters, schema shapes and result bodies
(``{"result": "ok"}``, ``{"result": "N rows affected", "rowcount": N}``, rows as lists or, with
``rows_as_objects``, objects), and the same error codes where the meaning is the same
(UndefinedTable, UniqueViolation, QueryCanceled, OperationalError...), so a diagram can move
between the two. Differences, all from MySQL itself:

- identifiers are quoted with backticks and never case-folded (MySQL does not fold names; whether
  table names are case-sensitive is the server's lower_case_table_names); ``db.table`` qualifies;
- values are escaped by PyMySQL on the client (MySQL's text protocol has no bound parameters);
  objects and lists become JSON text, booleans 1 and 0;
- DoSQL runs one statement; without a row count it answers ``{"result": "0 rows affected"}``;
- ilike is ``LOWER(column) LIKE LOWER(value)``;
- the statement timeout is MariaDB's max_statement_time (any statement) or MySQL's
  max_execution_time (SELECT only), set for the session before each command;
- MySQL warnings (a value truncated, a table that did not exist) become spiff__logs lines.

Rows are JSON-safe: DECIMAL as ``server.json_values`` documents for Decimal, DATETIME and DATE as
ISO 8601 text, TIME as seconds, BLOB/BINARY as base64, SET as its text ("a,c"), MySQL's JSON type
parsed (MariaDB's JSON type is text and stays text), zero dates as MySQL's text.

Configuration (environment, read when the servicer is built; keyword arguments win):
    CONNECTOR_PROXY_MYSQL_POOL_SIZE        connections per connection string (default 5)
    CONNECTOR_PROXY_MYSQL_MAX_POOLS        connection strings with a pool at once (default 8)
    CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT  seconds to connect, or to wait for a pooled connection (10)
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import ssl
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]
from spiff.connector.mysql.v1 import mysql_pb2 as pb, mysql_pb2_grpc

from server import errors, json_values, log

__all__ = ["MysqlService"]

DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
DEADLINE_MARGIN = 0.5  # seconds left to roll back and report before the call's deadline
MAX_IDLE = 300
MAX_LOGGED_SQL = 500
JSON_TYPE = 245  # MySQL's JSON column type (MariaDB's JSON is LONGTEXT)


def _env_number(name: str, default: float) -> float:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number <= 0:
        msg = f"{name} must be a positive number, not {text!r}"
        raise ValueError(msg)
    return number


class MysqlService(mysql_pb2_grpc.MysqlServiceServicer):
    """Runs each command in one transaction on a pooled connection to its server.

    Args:
        pool_size: connections per connection string (CONNECTOR_PROXY_MYSQL_POOL_SIZE, 5).
        max_pools: connection strings with an open pool (CONNECTOR_PROXY_MYSQL_MAX_POOLS, 8).
        connect_timeout: seconds to connect or to wait for a free pooled connection
            (CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT, 10).
    """

    def __init__(
        self,
        *,
        pool_size: int | None = None,
        max_pools: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._pools = _Pools(
            size=pool_size or int(_env_number("CONNECTOR_PROXY_MYSQL_POOL_SIZE", 5)),
            max_pools=max_pools or int(_env_number("CONNECTOR_PROXY_MYSQL_MAX_POOLS", 8)),
            connect_timeout=connect_timeout or _env_number("CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT", 10),
        )

    async def aclose(self) -> None:
        """Closes every pool; the next call opens new ones."""
        await self._pools.close()

    async def CreateTableV2(self, request: pb.CreateTableV2Request, context: Any) -> pb.CreateTableV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        schema = _schema(request.schema, bad)
        definitions = schema.get("column_definitions")
        columns: list[str] = []
        if not isinstance(definitions, list) or not definitions:
            bad.append(
                errors.Violation("schema.column_definitions", "must be a non-empty list of {name, type}")
            )
        else:
            for i, item in enumerate(definitions):
                path = f"schema.column_definitions[{i}]"
                if not isinstance(item, dict):
                    bad.append(errors.Violation(path, "must be an object {name, type}"))
                    continue
                name = _identifier(item.get("name"), f"{path}.name", bad)
                kind = _column_type(item.get("type"), f"{path}.type", bad)
                columns.append(f"{name} {kind}")
        timeout_ms = _timeout(request, bad)
        _check(bad)
        query = f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})"
        await self._run(target, _Plan(query, []), timeout_ms, context)
        return pb.CreateTableV2Response(result="ok")

    async def DropTableV2(self, request: pb.DropTableV2Request, context: Any) -> pb.DropTableV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        await self._run(target, _Plan(f"DROP TABLE IF EXISTS {table}", []), timeout_ms, context)
        return pb.DropTableV2Response(result="ok")

    async def InsertValuesV2(
        self, request: pb.InsertValuesV2Request, context: Any
    ) -> pb.InsertValuesV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        schema = _schema(request.schema, bad)
        columns = _identifiers(schema.get("columns"), "schema.columns", bad)
        rows = schema.get("values")
        params: list[list[Any]] = []
        if not isinstance(rows, list):
            bad.append(errors.Violation("schema.values", "must be a list of rows, each a list of values"))
        else:
            for i, row in enumerate(rows):
                if not isinstance(row, list) or (columns and len(row) != len(columns)):
                    width = len(columns) if columns else "as many"
                    description = f"must be a list of {width} values, one per column"
                    bad.append(errors.Violation(f"schema.values[{i}]", description))
                else:
                    params.append([_param(value) for value in row])
        timeout_ms = _timeout(request, bad)
        _check(bad)
        marks = ", ".join(["%s"] * len(columns))
        query = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608 - quoted names
        outcome = await self._run(target, _Plan(query, [], many=params), timeout_ms, context)
        return pb.InsertValuesV2Response(result=_affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def SelectValuesV2(
        self, request: pb.SelectValuesV2Request, context: Any
    ) -> pb.SelectValuesV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        schema = _schema(request.schema, bad)
        wanted = schema.get("columns")
        if wanted is None or wanted == [] or wanted == ["*"]:
            selected = "*"
        else:
            selected = ", ".join(_identifiers(wanted, "schema.columns", bad))
        where, params = _where(schema.get("where"), bad)
        tail = _order_and_limit(schema, bad, params)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        query = f"SELECT {selected} FROM {table}{where}{tail}"  # noqa: S608 - quoted names, escaped values
        outcome = await self._run(target, _Plan(query, params, fetch=True), timeout_ms, context)
        return pb.SelectValuesV2Response(body=json_values.dump(_rows(outcome, request.rows_as_objects)))

    async def UpdateValuesV2(
        self, request: pb.UpdateValuesV2Request, context: Any
    ) -> pb.UpdateValuesV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        schema = _schema(request.schema, bad)
        changes = schema.get("set")
        assignments: list[str] = []
        params: list[Any] = []
        if not isinstance(changes, dict) or not changes:
            bad.append(errors.Violation("schema.set", "must be a non-empty object of columns to values"))
        else:
            for name, value in changes.items():
                assignments.append(f"{_identifier(name, f'schema.set.{name}', bad)} = %s")
                params.append(_param(value))
        where, where_params = _where(schema.get("where"), bad)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        if not schema.get("where"):
            log("No where: every row is updated.")
        query = f"UPDATE {table} SET {', '.join(assignments)}{where}"  # noqa: S608 - quoted names
        outcome = await self._run(target, _Plan(query, params + where_params), timeout_ms, context)
        return pb.UpdateValuesV2Response(result=_affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DeleteValuesV2(
        self, request: pb.DeleteValuesV2Request, context: Any
    ) -> pb.DeleteValuesV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        schema = _schema(request.schema, bad)
        where, params = _where(schema.get("where"), bad)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        if not schema.get("where"):
            log("No where: every row is deleted.")
        query = f"DELETE FROM {table}{where}"  # noqa: S608 - quoted names, escaped values
        outcome = await self._run(target, _Plan(query, params), timeout_ms, context)
        return pb.DeleteValuesV2Response(result=_affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DoSQL(self, request: pb.DoSQLRequest, context: Any) -> pb.DoSQLResponse:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        schema = _schema(request.schema, bad)
        text = schema.get("sql")
        if not isinstance(text, str) or not text.strip():
            bad.append(errors.Violation("schema.sql", "must be a non-empty SQL statement"))
        values = schema.get("values")
        params: list[Any] | dict[str, Any] | None = None
        if isinstance(values, list):
            params = [_param(value) for value in values] if values else None
        elif isinstance(values, dict):
            params = {str(key): _param(value) for key, value in values.items()} if values else None
        elif values is not None:
            bad.append(
                errors.Violation("schema.values", "must be a list (for %s) or an object (for %(name)s)")
            )
        fetch = schema.get("fetch_results", False)
        if not isinstance(fetch, bool):
            bad.append(errors.Violation("schema.fetch_results", "must be true or false"))
        timeout_ms = _timeout(request, bad)
        _check(bad)
        assert isinstance(text, str)  # noqa: S101 - _check raised otherwise
        outcome = await self._run(target, _Plan(text, params, fetch=fetch), timeout_ms, context)
        if fetch:
            if outcome.rows is None:
                log("The statement returned no rows to fetch.")
            return pb.DoSQLResponse(body=json_values.dump(_rows(outcome, request.rows_as_objects)))
        body = {"result": _affected(outcome.rowcount), "rowcount": outcome.rowcount}
        return pb.DoSQLResponse(body=json_values.dump(body))

    async def _run(self, target: _Target, plan: _Plan, timeout_ms: int, context: Any) -> _Outcome:
        """Runs the plan in one transaction on a pooled connection, under the statement timeout."""
        loop = asyncio.get_running_loop()
        remaining = context.time_remaining()
        deadline = loop.time() + (remaining - DEADLINE_MARGIN if remaining is not None else math.inf)
        log(_statement_text(plan.query))
        started = time.perf_counter()
        try:
            async with self._pools.connection(target, deadline) as conn:
                return await _execute(conn, plan, timeout_ms, deadline - loop.time())
        except pymysql.err.Error as exc:
            log(f"-> {_error_code(exc)} after {_ms(started)} ms")
            raise _command_error(exc, target) from exc
        except errors.CommandError:
            log(f"-> failed after {_ms(started)} ms")
            raise


@dataclass(frozen=True)
class _Plan:
    query: str
    params: Sequence[Any] | Mapping[str, Any] | None
    many: list[list[Any]] | None = None
    fetch: bool = False


@dataclass(frozen=True)
class _Outcome:
    rowcount: int
    rows: list[tuple[Any, ...]] | None = None
    columns: list[str] = field(default_factory=list)
    json_columns: frozenset[int] = frozenset()


async def _execute(conn: Any, plan: _Plan, timeout_ms: int, budget: float) -> _Outcome:
    if math.isfinite(budget):  # the call has a deadline: the statement must end before it
        budget_ms = math.floor(budget * 1000)
        if budget_ms < 1:
            msg = "No time was left to run the statement."
            raise errors.DeadlineExceeded(msg, error_code="QueryCanceled")
        timeout_ms = min(timeout_ms, budget_ms)
    started = time.perf_counter()
    async with conn.cursor(_LoggingCursor) as cursor:
        if "MariaDB" in conn.get_server_info():
            await cursor.execute("SET SESSION max_statement_time = %s", [timeout_ms / 1000])
        else:
            await cursor.execute("SET SESSION max_execution_time = %s", [timeout_ms])
        if plan.many is not None:
            rowcount = await cursor.executemany(plan.query, plan.many) if plan.many else 0
        else:
            await cursor.execute(_bind(conn, plan))
            rowcount = cursor.rowcount
        outcome = _Outcome(max(rowcount or 0, 0))
        if plan.fetch and cursor.description is not None:
            rows = list(await cursor.fetchall())
            names = [column[0] for column in cursor.description]
            json_columns = frozenset(
                i for i, column in enumerate(cursor.description) if column[1] == JSON_TYPE
            )
            outcome = _Outcome(len(rows), rows, names, json_columns)
    if outcome.rows is not None:
        log(f"-> {len(outcome.rows)} row{'s' * (len(outcome.rows) != 1)} in {_ms(started)} ms")
    else:
        log(f"-> {_affected(outcome.rowcount)} in {_ms(started)} ms")
    return outcome


def _bind(conn: Any, plan: _Plan) -> str:
    """The statement with its values escaped in, as PyMySQL would, but reporting a mismatch
    between values and placeholders as the caller's mistake."""
    if plan.params is None:
        return plan.query
    try:
        if isinstance(plan.params, Mapping):
            return plan.query % {key: conn.escape(value) for key, value in plan.params.items()}
        return plan.query % tuple(conn.escape(value) for value in plan.params)
    except (TypeError, ValueError, KeyError) as exc:
        msg = f"schema.values do not fit the statement's placeholders ({type(exc).__name__}: {exc})."
        raise errors.InvalidArgument(msg, error_code="ProgrammingError") from None


class _LoggingCursor(aiomysql.Cursor):  # type: ignore[misc]
    """MySQL's warnings go to spiff__logs, where aiomysql would raise them as Python warnings."""

    async def _show_warnings(self, conn: Any) -> None:
        if self._result and self._result.has_next:
            return
        for level, code, message in await conn.show_warnings() or ():
            log(f"{level} {code}: {message}")


# --- connections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A parsed connection string: aiomysql's arguments, what to scrub, how to name it in logs."""

    key: str
    options: dict[str, Any]
    secrets: tuple[str, ...]
    where: str

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())


_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_KEYS = {"host", "port", "user", "password", "database", "dbname", "charset", "ssl"}


def _target(conninfo: str) -> _Target:
    """Parses ``mysql://user:password@host:port/database?charset=...&ssl=true`` or key=value pairs."""
    msg = "database_connection_str is not a mysql:// URI or key=value connection string."
    invalid = errors.InvalidParameters(
        msg, violations=[errors.Violation("database_connection_str", "is not a connection string or URI")]
    )
    raw: dict[str, str] = {}
    try:
        if "://" in conninfo:
            parts = urlsplit(conninfo)
            if parts.scheme not in ("mysql", "mariadb") or parts.fragment:
                raise invalid
            for key, value in (
                ("host", parts.hostname),
                ("port", str(parts.port) if parts.port else None),
                ("user", unquote(parts.username) if parts.username else None),
                ("password", unquote(parts.password) if parts.password is not None else None),
                ("database", unquote(parts.path.lstrip("/")) or None),
            ):
                if value is not None:
                    raw[key] = value
            raw.update(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query)))
        else:
            pos = 0
            while pos < len(conninfo.rstrip()):
                match = _PAIR.match(conninfo, pos)
                if match is None or match.end() == pos:
                    raise invalid
                value = match.group(2)
                if value.startswith("'"):
                    value = re.sub(r"\\(.)", r"\1", value[1:-1])
                raw[match.group(1).lower()] = value
                pos = match.end()
    except ValueError:  # a bad port or query string
        raise invalid from None
    if not raw or set(raw) - _KEYS:
        raise invalid
    database = raw.get("database") or raw.get("dbname")
    options: dict[str, Any] = {
        "host": raw.get("host") or "localhost",
        "user": raw.get("user") or "root",
        "password": raw.get("password", ""),
        "charset": raw.get("charset") or "utf8mb4",
    }
    if database:
        options["db"] = database
    if not (raw.get("port") or "3306").isdigit():
        raise invalid
    options["port"] = int(raw.get("port") or 3306)
    secure = (raw.get("ssl") or "false").lower()
    if secure not in ("true", "false", "1", "0", "required", "disabled"):
        raise invalid
    if secure in ("true", "1", "required"):
        options["ssl"] = ssl.create_default_context()
    password = options["password"]
    secrets = {conninfo} | ({password, quote(password, safe="")} if password else set())
    named = f'database "{database}"' if database else "no database"
    where = f"{named} on {options['host']}:{options['port']}"
    return _Target(conninfo, options, tuple(sorted(secrets, key=len, reverse=True)), where)


@dataclass
class _Entry:
    pool: Any
    users: int = 0


class _Pools:
    """One lazily created aiomysql pool per connection string, at most ``max_pools``."""

    def __init__(self, *, size: int, max_pools: int, connect_timeout: float) -> None:
        self._size = max(1, size)
        self._max_pools = max(1, max_pools)
        self._connect_timeout = connect_timeout
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def connection(self, target: _Target, deadline: float) -> AsyncIterator[Any]:
        """A pooled connection in a transaction, committed on success, rolled back on error."""
        loop = asyncio.get_running_loop()
        entry = await self._entry(target)
        entry.users += 1
        try:
            wait = max(min(self._connect_timeout, deadline - loop.time()), 0.001)
            conn = await self._acquire(entry, target, wait)
            try:
                yield conn
                await conn.commit()
            except (pymysql.err.Error, errors.CommandError):
                try:
                    await conn.rollback()
                except Exception:  # the connection broke: it is not reused
                    conn.close()
                raise
            except BaseException:
                conn.close()  # cancelled mid-statement: the connection's state is unknown
                raise
            finally:
                entry.pool.release(conn)
        finally:
            entry.users -= 1

    async def _acquire(self, entry: _Entry, target: _Target, wait: float) -> Any:
        pool = entry.pool
        try:
            async with asyncio.timeout(wait):
                conn = await pool.acquire()
                try:
                    await conn.ping(reconnect=False)  # a connection the server dropped is replaced
                except (pymysql.err.Error, OSError):
                    conn.close()
                    pool.release(conn)
                    conn = await pool.acquire()
                return conn
        except TimeoutError:
            if pool.freesize == 0 and pool.size >= self._size:
                busy = f"All {self._size} pooled connections to {target.where} stayed busy for {wait:.1f} s."
                raise errors.ResourceExhausted(busy, error_code="PoolTimeout") from None
            msg = f"Could not connect to {target.where} within {wait:.1f} s."
            raise errors.Unavailable(msg, error_code="OperationalError") from None

    async def close(self) -> None:
        entries = list(self._entries.values())
        self._entries.clear()
        for entry in entries:
            entry.pool.close()
            await entry.pool.wait_closed()

    async def _entry(self, target: _Target) -> _Entry:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # pools belong to the loop that made them
            self._entries.clear()
            self._loop = loop
        entry = self._entries.get(target.key)
        if entry is not None:
            self._entries.move_to_end(target.key)
            return entry
        pool = await aiomysql.create_pool(
            minsize=0,
            maxsize=self._size,
            pool_recycle=MAX_IDLE,
            connect_timeout=max(1, math.ceil(self._connect_timeout)),
            autocommit=False,
            **target.options,
        )
        entry = self._entries[target.key] = _Entry(pool)
        log(f"Opened a pool of up to {self._size} connections to {target.where}.")
        while len(self._entries) > self._max_pools:
            idle = next((k for k, e in self._entries.items() if e.users == 0 and k != target.key), None)
            if idle is None:
                break  # every other pool is in use: stay over the bound until one is idle
            old = self._entries.pop(idle).pool
            old.close()
            await old.wait_closed()
        return entry


# --- building statements ---------------------------------------------------------------------

_PART = r"[A-Za-z0-9_$]+|`(?:[^`]|``)+`"
_PARTS = re.compile(_PART)
_QUALIFIED = re.compile(rf"(?:{_PART})(?:\.(?:{_PART}))?")


def _check(bad: list[errors.Violation]) -> None:
    if bad:
        names = ", ".join(dict.fromkeys(v.field for v in bad))
        msg = f"Invalid parameters: {names}."
        raise errors.InvalidParameters(msg, violations=bad)


def _timeout(request: Any, bad: list[errors.Violation]) -> int:
    if not request.HasField("statement_timeout_ms"):
        return DEFAULT_STATEMENT_TIMEOUT_MS
    wanted: int = request.statement_timeout_ms
    if wanted < 1:
        bad.append(errors.Violation("statement_timeout_ms", "must be at least 1"))
    return wanted


def _schema(value: Any, bad: list[errors.Violation]) -> dict[str, Any]:
    schema = json_values.load(value)
    if isinstance(schema, dict):
        return schema
    bad.append(errors.Violation("schema", "must be a JSON object"))
    return {}


def _quote(name: str) -> str:
    # % is doubled because PyMySQL %-formats the statement with the escaped values.
    return "`" + name.replace("`", "``").replace("%", "%%") + "`"


def _identifier(text: Any, path: str, bad: list[errors.Violation]) -> str:
    """A table or column name quoted with backticks: ``a.b`` qualifies; ``x; DROP TABLE y`` is one name."""
    if not isinstance(text, str) or not text:
        bad.append(errors.Violation(path, "must be a non-empty name"))
        return "``"
    if "\x00" in text:
        bad.append(errors.Violation(path, "must not contain NUL characters"))
        return "``"
    if _QUALIFIED.fullmatch(text):
        parts = [p[1:-1].replace("``", "`") if p.startswith("`") else p for p in _PARTS.findall(text)]
        return ".".join(_quote(part) for part in parts)
    return _quote(text)


def _identifiers(items: Any, path: str, bad: list[errors.Violation]) -> list[str]:
    if not isinstance(items, list) or not items:
        bad.append(errors.Violation(path, "must be a non-empty list of column names"))
        return []
    return [_identifier(item, f"{path}[{i}]", bad) for i, item in enumerate(items)]


def _param(value: Any) -> Any:
    """A JSON value for PyMySQL to escape: objects and lists as their JSON text."""
    if isinstance(value, dict | list):
        return json_values.dumps(value)
    return value


_COMPARISONS = {
    "=": "{} = %s",
    "!=": "{} <> %s",
    "<>": "{} <> %s",
    "<": "{} < %s",
    "<=": "{} <= %s",
    ">": "{} > %s",
    ">=": "{} >= %s",
    "like": "{} LIKE %s",
    "not like": "{} NOT LIKE %s",
    "ilike": "LOWER({}) LIKE LOWER(%s)",
    "not ilike": "LOWER({}) NOT LIKE LOWER(%s)",
}
_KEYWORD_VALUES: dict[Any, str] = {None: "NULL", True: "TRUE", False: "FALSE"}
OPERATORS = (*_COMPARISONS, "in", "not in", "is", "is not")


def _where(items: Any, bad: list[errors.Violation]) -> tuple[str, list[Any]]:
    """`` WHERE c1 AND c2 ...`` from ``[[column, operator, value], ...]``, and its values."""
    if items is None or items == []:
        return "", []
    if not isinstance(items, list):
        bad.append(errors.Violation("schema.where", "must be a list of [column, operator, value]"))
        return "", []
    conditions: list[str] = []
    params: list[Any] = []
    for i, item in enumerate(items):
        path = f"schema.where[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            bad.append(errors.Violation(path, "must be [column, operator, value]"))
            continue
        name, operator, value = item
        column = _identifier(name, f"{path}[0]", bad)
        op = " ".join(operator.lower().split()) if isinstance(operator, str) else ""
        if op in ("=", "!=", "<>") and value is None:
            op = "is" if op == "=" else "is not"
        if op in _COMPARISONS:
            conditions.append(_COMPARISONS[op].format(column))
            params.append(_param(value))
        elif op in ("in", "not in"):
            if not isinstance(value, list):
                bad.append(errors.Violation(f"{path}[2]", f"must be a list for {op}"))
            elif not value:  # IN () is not SQL: nothing is in an empty list
                conditions.append("FALSE" if op == "in" else "TRUE")
            else:
                conditions.append(f"{column} {op.upper()} ({', '.join(['%s'] * len(value))})")
                params.extend(_param(v) for v in value)
        elif op in ("is", "is not"):
            if value is None or isinstance(value, bool):
                conditions.append(f"{column} {op.upper()} {_KEYWORD_VALUES[value]}")
            else:
                bad.append(errors.Violation(f"{path}[2]", f"must be null, true or false for {op}"))
        else:
            bad.append(errors.Violation(f"{path}[1]", f"must be one of {', '.join(OPERATORS)}"))
    if not conditions:
        return "", []
    return " WHERE " + " AND ".join(conditions), params


def _order_and_limit(schema: dict[str, Any], bad: list[errors.Violation], params: list[Any]) -> str:
    """`` ORDER BY ... LIMIT %s OFFSET %s`` from schema.order_by, limit and offset (appends to params)."""
    text = ""
    order = schema.get("order_by")
    if order is not None and order != []:
        keys: list[str] = []
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
            keys.append(f"{_identifier(name, path, bad)} {direction}")
        if keys:
            text += " ORDER BY " + ", ".join(keys)
    limits: dict[str, int] = {}
    for key in ("limit", "offset"):
        value = schema.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad.append(errors.Violation(f"schema.{key}", "must be a whole number of at least 0"))
        else:
            limits[key] = value
    if limits:  # MySQL has no OFFSET without LIMIT: the largest LIMIT stands in
        text += " LIMIT %s"
        params.append(limits.get("limit", 2**64 - 1))
    if "offset" in limits:
        text += " OFFSET %s"
        params.append(limits["offset"])
    return text


# Column types: a strict grammar, rebuilt from its tokens (types cannot be escaped values).
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
_ACTIONS = {"CASCADE": (), "RESTRICT": (), "SET": ("NULL", "DEFAULT"), "NO": ("ACTION",)}
_TYPE_HELP = (
    "must be a column type: a type name with optional (n), (n, m) or ('a', 'b'), then any of NOT NULL, "
    "NULL, PRIMARY KEY, UNIQUE [KEY], AUTO_INCREMENT, DEFAULT <number, 'text', TRUE, FALSE, NULL, "
    "CURRENT_TIMESTAMP[(n)]>, ON UPDATE CURRENT_TIMESTAMP[(n)], CHARACTER SET, COLLATE, COMMENT 'text', "
    "REFERENCES table [(column)] [ON DELETE|UPDATE action]; use DoSQL for anything else"
)


class _Refused(Exception):
    pass


class _TypeParser:
    """Reads a column type token by token, writing out only what the grammar allows."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.out: list[str] = []

    def parse(self) -> str:
        words = 0
        while self._at("word") and not self._attribute_starts():
            self.out.append(self._take())
            words += 1
            if self._at("punct", "("):
                self._arguments()
        if not words:
            raise _Refused
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
            self._keyword("NULL")
        elif word == "PRIMARY":
            self._keyword("KEY")
        elif word == "UNIQUE":
            if self._at("word", "KEY"):
                self._keyword("KEY")
        elif word == "DEFAULT":
            if self._at("number") or self._at("string"):
                self.out.append(self._take())
            elif self._at("word", *_DEFAULT_KEYWORDS):
                self.out.append(self._take().upper())
            else:
                self._clock()
        elif word == "ON":
            self._keyword("UPDATE")
            self._clock()
        elif word == "CHARACTER":
            self._keyword("SET")
            self.out.append(self._expect("word"))
        elif word in ("CHARSET", "COLLATE"):
            self.out.append(self._expect("word"))
        elif word == "COMMENT":
            self.out.append(self._expect("string"))
        elif word == "REFERENCES":
            self._references()
        elif word not in ("NULL", "AUTO_INCREMENT"):
            raise _Refused

    def _references(self) -> None:
        self.out.append(self._expect("word"))
        if self._at("punct", "("):
            self._take()
            self.out[-1] += f"({self._expect('word')})"
            self._expect("punct", ")")
        while self._at("word", "ON"):
            self._keyword("ON")
            self.out.append(self._expect("word", "DELETE", "UPDATE").upper())
            action = self._expect("word", *_ACTIONS).upper()
            self.out.append(action)
            if _ACTIONS[action]:
                self.out.append(self._expect("word", *_ACTIONS[action]).upper())

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
            raise _Refused
        self.out[-1] += f"({', '.join(items)})"

    def _keyword(self, word: str) -> None:
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
            raise _Refused
        return self._take()


def _column_type(text: Any, path: str, bad: list[errors.Violation]) -> str:
    """The column type rebuilt from the tokens of the strict grammar ("" and a violation if refused)."""
    tokens: list[tuple[str, str]] = []
    if isinstance(text, str):
        text = text.strip()
        pos = 0
        while pos < len(text):
            match = _TYPE_TOKEN.match(text, pos)
            if match is None or match.lastgroup is None:
                tokens = []
                break
            tokens.append((match.lastgroup, match.group(match.lastgroup)))
            pos = match.end()
    try:
        if not tokens:
            raise _Refused
        # % is doubled: PyMySQL %-formats every statement this connector builds.
        return _TypeParser(tokens).parse().replace("%", "%%")
    except _Refused:
        bad.append(errors.Violation(path, _TYPE_HELP))
        return ""


# --- results ------------------------------------------------------------------------------------


def _rows(outcome: _Outcome, as_objects: bool) -> list[Any]:
    rows = [
        [_json(value) if i in outcome.json_columns else _cell(value) for i, value in enumerate(row)]
        for row in outcome.rows or []
    ]
    if as_objects:
        return [dict(zip(outcome.columns, row, strict=True)) for row in rows]
    return rows


def _json(value: Any) -> Any:
    if isinstance(value, str):
        with suppress(ValueError):
            return json_values.loads(value)
    return _cell(value)


def _cell(value: Any) -> Any:
    """A value as PyMySQL returned it, in its JSON form (see the module docstring)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, set | frozenset):
        return ",".join(sorted(value))  # SET as MySQL writes it (MariaDB sends it as that text)
    try:
        return json_values.to_json_safe(value)
    except TypeError:
        return str(value)


def _affected(rowcount: int) -> str:
    return f"{rowcount} rows affected"


def _statement_text(query: str) -> str:
    text = " ".join(query.split())
    return text if len(text) <= MAX_LOGGED_SQL else text[: MAX_LOGGED_SQL - 3] + "..."


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# --- errors ---------------------------------------------------------------------------------------

# MySQL error numbers with the postgres_v2 error_code of the same meaning, and their gRPC code.
_BY_ERRNO: dict[int, tuple[str, type[errors.CommandError]]] = {
    1040: ("OperationalError", errors.ResourceExhausted),  # too many connections
    1044: ("OperationalError", errors.PermissionDenied),  # access denied to the database
    1045: ("OperationalError", errors.Unauthenticated),  # access denied: user or password
    1049: ("OperationalError", errors.NotFound),  # unknown database
    1048: ("NotNullViolation", errors.FailedPrecondition),
    1364: ("NotNullViolation", errors.FailedPrecondition),  # no value and no default
    1050: ("DuplicateTable", errors.AlreadyExists),
    1060: ("DuplicateColumn", errors.AlreadyExists),
    1062: ("UniqueViolation", errors.AlreadyExists),
    1586: ("UniqueViolation", errors.AlreadyExists),
    1051: ("UndefinedTable", errors.NotFound),
    1146: ("UndefinedTable", errors.NotFound),
    1054: ("UndefinedColumn", errors.NotFound),
    1305: ("UndefinedFunction", errors.NotFound),
    1630: ("UndefinedFunction", errors.NotFound),
    1064: ("SyntaxError", errors.InvalidArgument),
    1142: ("InsufficientPrivilege", errors.PermissionDenied),
    1143: ("InsufficientPrivilege", errors.PermissionDenied),
    1227: ("InsufficientPrivilege", errors.PermissionDenied),
    1213: ("DeadlockDetected", errors.Aborted),
    1205: ("LockNotAvailable", errors.Aborted),
    1216: ("ForeignKeyViolation", errors.FailedPrecondition),
    1217: ("ForeignKeyViolation", errors.FailedPrecondition),
    1451: ("ForeignKeyViolation", errors.FailedPrecondition),
    1452: ("ForeignKeyViolation", errors.FailedPrecondition),
    3819: ("CheckViolation", errors.FailedPrecondition),
    4025: ("CheckViolation", errors.FailedPrecondition),
    1644: ("RaiseException", errors.FailedPrecondition),  # SIGNAL
    1317: ("QueryCanceled", errors.DeadlineExceeded),
    1969: ("QueryCanceled", errors.DeadlineExceeded),  # MariaDB max_statement_time
    3024: ("QueryCanceled", errors.DeadlineExceeded),  # MySQL max_execution_time
    1365: ("DivisionByZero", errors.InvalidArgument),
    1264: ("NumericValueOutOfRange", errors.InvalidArgument),
    1406: ("StringDataRightTruncation", errors.InvalidArgument),
    1292: ("InvalidTextRepresentation", errors.InvalidArgument),
    1366: ("InvalidTextRepresentation", errors.InvalidArgument),
}
_BY_CLASS: tuple[tuple[type[pymysql.err.Error], type[errors.CommandError]], ...] = (
    (pymysql.err.ProgrammingError, errors.InvalidArgument),
    (pymysql.err.DataError, errors.InvalidArgument),
    (pymysql.err.IntegrityError, errors.FailedPrecondition),
    (pymysql.err.NotSupportedError, errors.Unimplemented),
    (pymysql.err.InternalError, errors.Internal),
)


def _errno(exc: pymysql.err.Error) -> int | None:
    return exc.args[0] if exc.args and isinstance(exc.args[0], int) else None


def _error_code(exc: pymysql.err.Error) -> str:
    known = _BY_ERRNO.get(_errno(exc) or 0)
    return known[0] if known else type(exc).__name__


def _error_class(exc: pymysql.err.Error) -> type[errors.CommandError]:
    errno = _errno(exc) or 0
    if errno in _BY_ERRNO:
        return _BY_ERRNO[errno][1]
    if 2000 <= errno < 3000:  # client errors: the server could not be reached or went away
        return errors.Unavailable
    return next((cls for kind, cls in _BY_CLASS if isinstance(exc, kind)), errors.Unknown)


def _command_error(exc: pymysql.err.Error, target: _Target) -> errors.CommandError:
    errno = _errno(exc)
    if errno is not None and len(exc.args) > 1:
        text = f"{exc.args[1]} (MySQL error {errno})"
    else:
        text = str(exc) or type(exc).__name__
    return _error_class(exc)(target.scrub(text), error_code=_error_code(exc))

"""The postgres_v2 connector: PostgreSQL tables and SQL over psycopg 3's asyncio API, one pool per database.

Commands keep sartography/connector-postgres's ids, parameters and result shapes:

    CreateTableV2   CREATE TABLE IF NOT EXISTS t (columns)           -> {"result": "ok"}
    DropTableV2     DROP TABLE IF EXISTS t                            -> {"result": "ok"}
    InsertValuesV2  INSERT INTO t (columns) VALUES (...) for each row -> {"result", "rowcount"}
    SelectValuesV2  SELECT columns FROM t WHERE ... [ORDER BY, LIMIT, OFFSET] -> rows
    UpdateValuesV2  UPDATE t SET ... WHERE ...                        -> {"result", "rowcount"}
    DeleteValuesV2  DELETE FROM t WHERE ...                           -> {"result", "rowcount"}
    DoSQL           any SQL with bound values                         -> rows, or {"result", "rowcount"}

``{"result", "rowcount"}`` is ``{"result": "N rows affected", "rowcount": N}``: the old
connector's text, plus the count as a number.

Rows are lists of values in column order (the old connector's shape), or objects of column names
to values with ``rows_as_objects``. Values are JSON-safe: numeric as ``server.json_values``
documents for Decimal, timestamps, dates and times as ISO 8601 text, interval as seconds, uuid as
text, bytea as base64, json/jsonb as JSON, arrays as lists, NaN and infinite floats as the text
PostgreSQL writes, dates and timestamps Python cannot hold (infinity, BC, after 9999) and other
types (inet, ranges, money, geometric) as their PostgreSQL text.

Safety:
    identifiers   table and column names are always quoted (``psycopg.sql.Identifier``). A
                  plain name (``[A-Za-z_][A-Za-z0-9_$]*``) is folded to lower case, which is what
                  PostgreSQL did with the old connector's unquoted names; a ``"Quoted"`` name keeps
                  its case; ``a.b`` qualifies; anything else (``x; DROP TABLE y``) is one
                  verbatim name, which at worst does not exist.
    values        always bound parameters: an object becomes jsonb, a list an array.
    column types  cannot be bound, so CreateTableV2 accepts only a strict grammar (a type name
                  with (n[, m]) and [] suffixes, then NOT NULL, NULL, PRIMARY KEY, UNIQUE,
                  DEFAULT <literal or now() and friends>, GENERATED ... AS IDENTITY, REFERENCES
                  t [(c)] [ON DELETE|UPDATE <action>]) and rebuilds the text from its tokens.
    time          each command runs in one transaction under a local statement_timeout
                  (statement_timeout_ms, default 30 s, never past the call's deadline less 0.5 s).
    secrets       the connection string and its passwords never reach logs, spiff__logs or
                  messages: every message is scrubbed of them, and a connection string that
                  does not parse is reported without libpq's text (which may quote it).

Connections: one ``psycopg_pool.AsyncConnectionPool`` per connection string, opened lazily on
the first call (after one direct connection attempt, so that a refused connection or an unknown
database is reported at once with the server's words rather than after a pool timeout), at most
``pool_size`` connections each, idle ones closed after 5 minutes, checked before use; at most
``max_pools`` pools, the least recently used idle one closed beyond that; all closed by aclose().

Errors carry the psycopg exception class name as error_code, as the old connector's did
(``UndefinedTable``, ``UniqueViolation``, ``OperationalError``...), with the gRPC code from the
SQLSTATE (see ``_error_class``), plus InvalidParameters and PoolTimeout.

Configuration (environment, read when the servicer is built; keyword arguments win):
    CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE        connections per database (default 5)
    CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS        databases with a pool at once (default 8)
    CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT  seconds to connect, or to wait for a pooled
                                                 connection (default 10)
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from spiff.connector.postgres_v2.v1 import postgres_v2_pb2 as pb, postgres_v2_pb2_grpc

from server import errors, json_values, log

__all__ = ["PostgresV2Service"]

APPLICATION_NAME = "spiff-connector-proxy"
DEFAULT_STATEMENT_TIMEOUT_MS = 30_000
DEADLINE_MARGIN = 0.5  # seconds left to roll back and report before the call's deadline
MAX_IDLE = 300.0
MAX_LOGGED_SQL = 500

_Connection = psycopg.AsyncConnection[Any]
_Pool = AsyncConnectionPool[_Connection]


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


class PostgresV2Service(postgres_v2_pb2_grpc.PostgresV2ServiceServicer):
    """Runs each command in one transaction on a pooled connection to its database.

    Args:
        pool_size: connections per connection string (CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE, 5).
        max_pools: connection strings with an open pool (CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS, 8).
        connect_timeout: seconds to connect or to wait for a free pooled connection
            (CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT, 10).
    """

    def __init__(
        self,
        *,
        pool_size: int | None = None,
        max_pools: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self._pools = _Pools(
            size=pool_size or int(_env_number("CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE", 5)),
            max_pools=max_pools or int(_env_number("CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS", 8)),
            connect_timeout=connect_timeout or _env_number("CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT", 10),
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
        columns: list[sql.Composable] = []
        if not isinstance(definitions, list) or not definitions:
            bad.append(_violation("schema.column_definitions", "must be a non-empty list of {name, type}"))
        else:
            for i, item in enumerate(definitions):
                path = f"schema.column_definitions[{i}]"
                if not isinstance(item, dict):
                    bad.append(_violation(path, "must be an object {name, type}"))
                    continue
                name = _identifier(item.get("name"), f"{path}.name", bad)
                kind = _column_type(item.get("type"), f"{path}.type", bad)
                if name is not None and kind is not None:
                    columns.append(sql.SQL("{} {}").format(name, sql.SQL(kind)))
        timeout_ms = _timeout(request, bad)
        _check(bad)
        query = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(", ").join(columns))
        await self._run(target, _Plan(query), timeout_ms, context)
        return pb.CreateTableV2Response(result="ok")

    async def DropTableV2(self, request: pb.DropTableV2Request, context: Any) -> pb.DropTableV2Response:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        table = _identifier(request.table_name, "table_name", bad)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        await self._run(target, _Plan(sql.SQL("DROP TABLE IF EXISTS {}").format(table)), timeout_ms, context)
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
            bad.append(_violation("schema.values", "must be a list of rows, each a list of values"))
        else:
            for i, row in enumerate(rows):
                if not isinstance(row, list) or (columns is not None and len(row) != len(columns)):
                    width = len(columns) if columns is not None else "as many"
                    bad.append(
                        _violation(f"schema.values[{i}]", f"must be a list of {width} values, one per column")
                    )
                else:
                    params.append([_param(value) for value in row])
        timeout_ms = _timeout(request, bad)
        _check(bad)
        assert columns is not None  # noqa: S101 - _check raised otherwise
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
            table, sql.SQL(", ").join(columns), sql.SQL(", ").join(sql.Placeholder() * len(columns))
        )
        outcome = await self._run(target, _Plan(query, many=params), timeout_ms, context)
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
            selected: sql.Composable = sql.SQL("*")
        else:
            columns = _identifiers(wanted, "schema.columns", bad)
            selected = sql.SQL(", ").join(columns or [])
        where, params = _where(schema.get("where"), bad)
        tail = _order_and_limit(schema, bad, params)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        query = sql.SQL("SELECT {} FROM {}").format(selected, table) + where + tail
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
        assignments: list[sql.Composable] = []
        params: list[Any] = []
        if not isinstance(changes, dict) or not changes:
            bad.append(_violation("schema.set", "must be a non-empty object of columns to values"))
        else:
            for name, value in changes.items():
                column = _identifier(name, f"schema.set.{name}", bad)
                if column is not None:
                    assignments.append(sql.SQL("{} = %s").format(column))
                    params.append(_param(value))
        where, where_params = _where(schema.get("where"), bad)
        timeout_ms = _timeout(request, bad)
        _check(bad)
        if not schema.get("where"):
            log("No where: every row is updated.")
        query = sql.SQL("UPDATE {} SET {}").format(table, sql.SQL(", ").join(assignments)) + where
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
        query = sql.SQL("DELETE FROM {}").format(table) + where
        outcome = await self._run(target, _Plan(query, params), timeout_ms, context)
        return pb.DeleteValuesV2Response(result=_affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DoSQL(self, request: pb.DoSQLRequest, context: Any) -> pb.DoSQLResponse:
        target = _target(request.database_connection_str)
        bad: list[errors.Violation] = []
        schema = _schema(request.schema, bad)
        text = schema.get("sql")
        if not isinstance(text, str) or not text.strip():
            bad.append(_violation("schema.sql", "must be a non-empty SQL statement"))
        values = schema.get("values")
        params: list[Any] | dict[str, Any] | None = None
        if isinstance(values, list):
            params = [_param(value) for value in values] if values else None
        elif isinstance(values, dict):
            params = {str(key): _param(value) for key, value in values.items()} if values else None
        elif values is not None:
            bad.append(_violation("schema.values", "must be a list (for %s) or an object (for %(name)s)"))
        fetch = schema.get("fetch_results", False)
        if not isinstance(fetch, bool):
            bad.append(_violation("schema.fetch_results", "must be true or false"))
        timeout_ms = _timeout(request, bad)
        _check(bad)
        assert isinstance(text, str)  # noqa: S101 - _check raised otherwise
        plan = _Plan(sql.SQL(text), params, fetch=fetch, last_result=True)
        outcome = await self._run(target, plan, timeout_ms, context)
        if fetch:
            if outcome.rows is None:
                log("The statement returned no rows to fetch.")
            return pb.DoSQLResponse(body=json_values.dump(_rows(outcome, request.rows_as_objects)))
        if outcome.rowcount < 0:
            return pb.DoSQLResponse(body=json_values.dump({"result": "ok"}))
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
        except psycopg.Error as exc:
            log(f"-> {type(exc).__name__} after {_ms(started)} ms")
            raise _command_error(exc, target) from exc
        except errors.CommandError:
            log(f"-> failed after {_ms(started)} ms")
            raise


@dataclass(frozen=True)
class _Plan:
    query: sql.SQL | sql.Composed
    params: Sequence[Any] | Mapping[str, Any] | None = None
    many: list[list[Any]] | None = None
    fetch: bool = False
    last_result: bool = False


@dataclass(frozen=True)
class _Outcome:
    rowcount: int
    rows: list[tuple[Any, ...]] | None = None
    columns: list[str] = field(default_factory=list)


async def _execute(conn: _Connection, plan: _Plan, timeout_ms: int, budget: float) -> _Outcome:
    if math.isfinite(budget):  # the call has a deadline: the statement must end before it
        budget_ms = math.floor(budget * 1000)
        if budget_ms < 1:
            msg = "No time was left to run the statement."
            raise errors.DeadlineExceeded(msg, error_code="QueryCanceled")
        timeout_ms = min(timeout_ms, budget_ms)
    started = time.perf_counter()

    def notice(diagnostic: psycopg.errors.Diagnostic) -> None:
        log(f"{diagnostic.severity}: {diagnostic.message_primary}")

    conn.add_notice_handler(notice)
    try:
        async with conn.cursor() as cursor:
            await cursor.execute("SELECT set_config('statement_timeout', %s, true)", [f"{timeout_ms}ms"])
            if plan.many is not None:
                if plan.many:
                    await cursor.executemany(plan.query, plan.many)
                rowcount = cursor.rowcount if plan.many else 0
            else:
                await cursor.execute(plan.query, plan.params)
                if plan.last_result:
                    while cursor.nextset():
                        pass
                rowcount = cursor.rowcount
            outcome = _Outcome(rowcount)
            if plan.fetch and cursor.description is not None:
                rows = await cursor.fetchall()
                outcome = _Outcome(rowcount, rows, [column.name for column in cursor.description])
    finally:
        conn.remove_notice_handler(notice)
    if outcome.rows is not None:
        log(f"-> {len(outcome.rows)} row{'s' * (len(outcome.rows) != 1)} in {_ms(started)} ms")
    elif rowcount >= 0:
        log(f"-> {_affected(rowcount)} in {_ms(started)} ms")
    else:
        log(f"-> ok in {_ms(started)} ms")
    return outcome


# --- connections -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """A parsed connection string: what to connect to, what to scrub, how to name it in logs."""

    conninfo: str
    secrets: tuple[str, ...]
    where: str

    def scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())


def _target(conninfo: str) -> _Target:
    try:
        options = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # libpq's message may quote the string, password included: say what is wrong without it.
        msg = "database_connection_str is not a libpq connection string (key=value ...) or postgresql:// URI."
        raise errors.InvalidParameters(
            msg, violations=[_violation("database_connection_str", "is not a connection string or URI")]
        ) from None
    passwords = [str(options[key]) for key in ("password", "sslpassword") if options.get(key)]
    # Also as a URI writes them, percent-encoded: messages must not carry them in either form.
    secrets = {conninfo, *passwords, *(quote(p, safe="") for p in passwords)}
    host = str(options.get("host") or options.get("hostaddr") or "the local socket")
    port = str(options.get("port") or "5432")
    database = options.get("dbname")
    named = f'database "{database}"' if database else "the default database"
    return _Target(conninfo, tuple(sorted(secrets, key=len, reverse=True)), f"{named} on {host}:{port}")


@dataclass
class _Entry:
    pool: _Pool
    users: int = 0


class _Pools:
    """One lazily opened AsyncConnectionPool per connection string, at most ``max_pools``."""

    def __init__(self, *, size: int, max_pools: int, connect_timeout: float) -> None:
        self._size = max(1, size)
        self._max_pools = max(1, max_pools)
        self._connect_timeout = connect_timeout
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._opening: dict[str, asyncio.Task[_Entry]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @asynccontextmanager
    async def connection(self, target: _Target, deadline: float) -> AsyncIterator[_Connection]:
        """A pooled connection in a transaction, committed on success, rolled back on error."""
        loop = asyncio.get_running_loop()
        entry = await self._entry(target, deadline)
        entry.users += 1
        try:
            wait = min(self._connect_timeout, deadline - loop.time())
            try:
                conn = await entry.pool.getconn(timeout=max(wait, 0.001))
            except PoolTimeout:
                await self._probe(target, deadline)  # raises OperationalError when the database is gone
                busy = f"All {self._size} pooled connections to {target.where} stayed busy for {wait:.1f} s."
                raise errors.ResourceExhausted(busy, error_code="PoolTimeout") from None
            try:
                async with conn:
                    yield conn
            finally:
                await entry.pool.putconn(conn)
        finally:
            entry.users -= 1

    async def close(self) -> None:
        entries, opening = list(self._entries.values()), list(self._opening.values())
        self._entries.clear()
        self._opening.clear()
        for task in opening:
            task.cancel()
        for entry in entries:
            await entry.pool.close()

    async def _entry(self, target: _Target, deadline: float) -> _Entry:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # pools belong to the loop that opened them
            self._entries.clear()
            self._opening.clear()
            self._loop = loop
        key = target.conninfo
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
            return entry
        task = self._opening.get(key)
        if task is None:
            task = self._opening[key] = loop.create_task(self._open(target, deadline))
            task.add_done_callback(lambda done: self._opened(key, done))
        # Shielded: a caller that gives up does not cancel the opening others wait for.
        return await asyncio.shield(task)

    def _opened(self, key: str, task: asyncio.Task[_Entry]) -> None:
        if self._opening.get(key) is task:
            del self._opening[key]
        if not task.cancelled():
            task.exception()  # retrieved here: callers that gave up must not leave it unretrieved

    async def _open(self, target: _Target, deadline: float) -> _Entry:
        await self._probe(target, deadline)
        pool: _Pool = AsyncConnectionPool(
            target.conninfo,
            kwargs={
                "fallback_application_name": APPLICATION_NAME,
                "connect_timeout": max(2, math.ceil(self._connect_timeout)),
            },
            min_size=0,
            max_size=self._size,
            open=False,
            configure=_configure,
            check=AsyncConnectionPool.check_connection,
            max_idle=MAX_IDLE,
            timeout=self._connect_timeout,
        )
        await pool.open()
        entry = self._entries[target.conninfo] = _Entry(pool)
        log(f"Opened a pool of up to {self._size} connections to {target.where}.")
        await self._evict(keep=target.conninfo)
        return entry

    async def _probe(self, target: _Target, deadline: float) -> None:
        """Connects once, directly, so that a failure is reported with the server's own words."""
        wait = min(self._connect_timeout, deadline - asyncio.get_running_loop().time())
        if wait <= 0:
            msg = f"No time was left to connect to {target.where}."
            raise errors.DeadlineExceeded(msg, error_code="OperationalError")
        try:
            async with asyncio.timeout(wait):
                conn = await psycopg.AsyncConnection.connect(
                    target.conninfo,
                    fallback_application_name=APPLICATION_NAME,
                    connect_timeout=max(2, math.ceil(wait)),
                )
        except TimeoutError:
            msg = f"Could not connect to {target.where} within {wait:.1f} s."
            raise errors.Unavailable(msg, error_code="OperationalError") from None
        await conn.close()

    async def _evict(self, keep: str) -> None:
        while len(self._entries) > self._max_pools:
            idle = next((k for k, e in self._entries.items() if e.users == 0 and k != keep), None)
            if idle is None:
                return  # every other pool is in use: stay over the bound until one is idle
            await self._entries.pop(idle).pool.close()


def _as_text_when_out_of_range(base: type[Any]) -> type[Any]:
    """A date/timestamp loader that gives PostgreSQL's own text for what Python cannot hold
    (``infinity``, ``-infinity``, years after 9999 or BC) instead of failing the whole result."""

    class Loader(base):  # type: ignore[misc]
        def load(self, data: Any) -> Any:
            try:
                return super().load(data)
            except psycopg.DataError:
                return bytes(data).decode()

    Loader.__name__ = Loader.__qualname__ = f"TextFallback{base.__name__}"
    return Loader


_LOADERS = {
    "date": _as_text_when_out_of_range(DateLoader),
    "timestamp": _as_text_when_out_of_range(TimestampLoader),
    "timestamptz": _as_text_when_out_of_range(TimestamptzLoader),
}


async def _configure(conn: _Connection) -> None:
    for name, loader in _LOADERS.items():
        conn.adapters.register_loader(name, loader)


# --- building statements ---------------------------------------------------------------------

_PLAIN = r"[A-Za-z_][A-Za-z0-9_$]*"
_QUOTED = r'"(?:[^"]|"")+"'
_PART = re.compile(rf"{_PLAIN}|{_QUOTED}")
_QUALIFIED = re.compile(rf"(?:{_PLAIN}|{_QUOTED})(?:\.(?:{_PLAIN}|{_QUOTED})){{0,2}}")


def _violation(path: str, description: str) -> errors.Violation:
    return errors.Violation(path, description)


def _check(bad: list[errors.Violation]) -> None:
    if bad:
        names = ", ".join(dict.fromkeys(v.field for v in bad))
        msg = f"Invalid parameters: {names}."
        raise errors.InvalidParameters(msg, violations=bad)


def _timeout(request: Any, bad: list[errors.Violation]) -> int:
    """statement_timeout_ms (every request has it), checked."""
    if not request.HasField("statement_timeout_ms"):
        return DEFAULT_STATEMENT_TIMEOUT_MS
    wanted: int = request.statement_timeout_ms
    if wanted < 1:
        bad.append(_violation("statement_timeout_ms", "must be at least 1"))
    return wanted


def _schema(value: Any, bad: list[errors.Violation]) -> dict[str, Any]:
    schema = json_values.load(value)
    if isinstance(schema, dict):
        return schema
    bad.append(_violation("schema", "must be a JSON object"))
    return {}


def _identifier(text: Any, path: str, bad: list[errors.Violation]) -> sql.Identifier | None:
    """A table or column name as a quoted identifier (see the module docstring for the rules)."""
    if not isinstance(text, str) or not text:
        bad.append(_violation(path, "must be a non-empty name"))
        return None
    if "\x00" in text:
        bad.append(_violation(path, "must not contain NUL characters"))
        return None
    if _QUALIFIED.fullmatch(text):
        parts = [p[1:-1].replace('""', '"') if p.startswith('"') else p.lower() for p in _PART.findall(text)]
        return sql.Identifier(*parts)
    return sql.Identifier(text)


def _identifiers(items: Any, path: str, bad: list[errors.Violation]) -> list[sql.Identifier] | None:
    if not isinstance(items, list) or not items:
        bad.append(_violation(path, "must be a non-empty list of column names"))
        return None
    found = [_identifier(item, f"{path}[{i}]", bad) for i, item in enumerate(items)]
    return [ident for ident in found if ident is not None]


def _param(value: Any) -> Any:
    """A JSON value as a bound parameter: objects as jsonb, lists as arrays, the rest as is."""
    if isinstance(value, dict):
        return Jsonb(value)
    if isinstance(value, list):
        return [_param(item) for item in value]
    return value


_COMPARISONS = {
    "=": "=",
    "!=": "<>",
    "<>": "<>",
    "<": "<",
    "<=": "<=",
    ">": ">",
    ">=": ">=",
    "like": "LIKE",
    "not like": "NOT LIKE",
    "ilike": "ILIKE",
    "not ilike": "NOT ILIKE",
}
_KEYWORD_VALUES: dict[Any, str] = {None: "NULL", True: "TRUE", False: "FALSE"}
OPERATORS = (*_COMPARISONS, "in", "not in", "is", "is not")


def _where(items: Any, bad: list[errors.Violation]) -> tuple[sql.Composable, list[Any]]:
    """`` WHERE c1 AND c2 ...`` from ``[[column, operator, value], ...]``, and its parameters."""
    if items is None or items == []:
        return sql.SQL(""), []
    if not isinstance(items, list):
        bad.append(_violation("schema.where", "must be a list of [column, operator, value]"))
        return sql.SQL(""), []
    conditions: list[sql.Composable] = []
    params: list[Any] = []
    for i, item in enumerate(items):
        path = f"schema.where[{i}]"
        if not isinstance(item, list) or len(item) != 3:
            bad.append(_violation(path, "must be [column, operator, value]"))
            continue
        name, operator, value = item
        column = _identifier(name, f"{path}[0]", bad) or sql.Identifier("?")
        op = " ".join(operator.lower().split()) if isinstance(operator, str) else ""
        if op in ("=", "!=", "<>") and value is None:
            op = "is" if op == "=" else "is not"
        if op in _COMPARISONS:
            conditions.append(
                sql.SQL("{} {} {}").format(column, sql.SQL(_COMPARISONS[op]), sql.Placeholder())
            )
            params.append(_param(value))
        elif op in ("in", "not in"):
            if not isinstance(value, list):
                bad.append(_violation(f"{path}[2]", f"must be a list for {op}"))
            elif not value:  # IN () is not SQL: nothing is in an empty list
                conditions.append(sql.SQL("FALSE" if op == "in" else "TRUE"))
            else:
                marks = sql.SQL(", ").join(sql.Placeholder() * len(value))
                conditions.append(sql.SQL("{} {} ({})").format(column, sql.SQL(op.upper()), marks))
                params.extend(_param(v) for v in value)
        elif op in ("is", "is not"):
            if value is None or isinstance(value, bool):
                keyword = sql.SQL(f"{op.upper()} {_KEYWORD_VALUES[value]}")
                conditions.append(sql.SQL("{} {}").format(column, keyword))
            else:
                bad.append(_violation(f"{path}[2]", f"must be null, true or false for {op}"))
        else:
            bad.append(_violation(f"{path}[1]", f"must be one of {', '.join(OPERATORS)}"))
    if not conditions:
        return sql.SQL(""), []
    return sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions), params


def _order_and_limit(
    schema: dict[str, Any], bad: list[errors.Violation], params: list[Any]
) -> sql.Composable:
    """`` ORDER BY ... LIMIT %s OFFSET %s`` from schema.order_by, limit and offset (appends to params)."""
    parts: list[sql.Composable] = []
    order = schema.get("order_by")
    if order is not None and order != []:
        keys: list[sql.Composable] = []
        if not isinstance(order, list):
            bad.append(_violation("schema.order_by", "must be a list of columns or [column, direction]"))
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
                bad.append(_violation(path, 'must be a column or [column, "asc" or "desc"]'))
                continue
            column = _identifier(name, path, bad)
            if column is not None:
                keys.append(sql.SQL("{} {}").format(column, sql.SQL(direction)))
        if keys:
            parts.append(sql.SQL(" ORDER BY ") + sql.SQL(", ").join(keys))
    for key, clause in (("limit", " LIMIT "), ("offset", " OFFSET ")):
        value = schema.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            bad.append(_violation(f"schema.{key}", "must be a whole number of at least 0"))
            continue
        parts.append(sql.SQL(clause) + sql.Placeholder())
        params.append(value)
    return sql.Composed(parts)


# Column types: a strict grammar, rebuilt from its tokens (types cannot be bound parameters).
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


class _Refused(Exception):
    pass


class _TypeParser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.out: list[str] = []

    def parse(self) -> str:
        words = 0
        while self._at("word") and self._text().upper() not in _CONSTRAINT_WORDS:
            self.out.append(self._take())
            words += 1
            if self._at("punct", "("):
                self._modifiers()
        if not words:
            raise _Refused
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
            self.out.append(self._expect("word"))
            if self._at("punct", "("):
                self._take()
                self.out[-1] += f"({self._expect('word')})"
                self._expect("punct", ")")
            while self._at("word", "ON"):
                self._keywords("ON")
                self.out.append(self._expect("word", "DELETE", "UPDATE").upper())
                self._action()
        else:
            raise _Refused

    def _action(self) -> None:
        if self._at("word", "CASCADE", "RESTRICT"):
            self._keywords(self._text().upper())
        elif self._at("word", "SET"):
            self._keywords("SET")
            self.out.append(self._expect("word", "NULL", "DEFAULT").upper())
        else:
            self._keywords("NO", "ACTION")

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
            raise _Refused

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
            raise _Refused
        return self._take()

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
            raise _Refused
        return self._take()


def _column_type(text: Any, path: str, bad: list[errors.Violation]) -> str | None:
    """The column type rebuilt from the tokens of the strict grammar, or None (and a violation)."""
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
        return _TypeParser(tokens).parse()
    except (_Refused, IndexError):
        bad.append(_violation(path, _TYPE_HELP))
        return None


# --- results ------------------------------------------------------------------------------------


def _rows(outcome: _Outcome, as_objects: bool) -> list[Any]:
    rows = outcome.rows or []
    if as_objects:
        return [dict(zip(outcome.columns, map(_cell, row), strict=True)) for row in rows]
    return [[_cell(value) for value in row] for row in rows]


_FLOAT_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _cell(value: Any) -> Any:
    """A value as psycopg loaded it, in its JSON form (see the module docstring)."""
    if value is None or isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else _FLOAT_TEXT.get(value, "NaN")
    if isinstance(value, list | tuple):
        return [_cell(item) for item in value]
    if isinstance(value, dict):
        return {str(key): _cell(item) for key, item in value.items()}
    try:
        return json_values.to_json_safe(value)
    except TypeError:
        return str(value)  # inet, ranges, money, geometric types...


def _affected(rowcount: int) -> str:
    return f"{rowcount} rows affected"  # the old connector's words, for every count


def _statement_text(query: sql.Composable) -> str:
    text = " ".join(query.as_string(None).split())
    return text if len(text) <= MAX_LOGGED_SQL else text[: MAX_LOGGED_SQL - 3] + "..."


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# --- errors ---------------------------------------------------------------------------------------

_BY_SQLSTATE_CLASS: dict[str, type[errors.CommandError]] = {
    "08": errors.Unavailable,  # connection exception
    "0A": errors.Unimplemented,  # feature not supported
    "21": errors.InvalidArgument,  # cardinality violation
    "22": errors.InvalidArgument,  # data exception
    "23": errors.FailedPrecondition,  # integrity constraint violation
    "25": errors.FailedPrecondition,  # invalid transaction state
    "28": errors.Unauthenticated,  # invalid authorization specification
    "2B": errors.FailedPrecondition,  # dependent privilege descriptors still exist
    "2F": errors.FailedPrecondition,  # SQL routine exception
    "38": errors.FailedPrecondition,  # external routine exception
    "39": errors.FailedPrecondition,  # external routine invocation exception
    "3B": errors.FailedPrecondition,  # savepoint exception
    "3D": errors.NotFound,  # invalid catalog name
    "3F": errors.NotFound,  # invalid schema name
    "40": errors.Aborted,  # transaction rollback
    "42": errors.InvalidArgument,  # syntax error or access rule violation
    "44": errors.FailedPrecondition,  # WITH CHECK OPTION violation
    "53": errors.ResourceExhausted,  # insufficient resources
    "54": errors.InvalidArgument,  # program limit exceeded
    "55": errors.FailedPrecondition,  # object not in prerequisite state
    "57": errors.Unavailable,  # operator intervention
    "58": errors.Internal,  # system error
    "72": errors.Aborted,  # snapshot too old
    "P0": errors.FailedPrecondition,  # PL/pgSQL error (RAISE EXCEPTION)
    "XX": errors.Internal,  # internal error
}
_BY_SQLSTATE: dict[str, type[errors.CommandError]] = {
    "57014": errors.DeadlineExceeded,  # query_canceled: the statement timeout
    "23505": errors.AlreadyExists,  # unique_violation
    "42501": errors.PermissionDenied,  # insufficient_privilege
    "55P03": errors.Aborted,  # lock_not_available
}


def _error_class(exc: psycopg.Error) -> type[errors.CommandError]:
    """The gRPC code of a psycopg error: by SQLSTATE, else by what the client library reported."""
    state = exc.sqlstate
    if state is None:
        if isinstance(exc, psycopg.OperationalError):
            return _connection_failure_class(str(exc))
        if isinstance(exc, psycopg.ProgrammingError | psycopg.DataError | psycopg.NotSupportedError):
            return errors.InvalidArgument
        return errors.Unknown
    name = type(exc).__name__
    if state in _BY_SQLSTATE:
        return _BY_SQLSTATE[state]
    if name.startswith("Undefined"):
        return errors.NotFound
    if name.startswith("Duplicate"):
        return errors.AlreadyExists
    return _BY_SQLSTATE_CLASS.get(state[:2], errors.Unknown)


def _connection_failure_class(text: str) -> type[errors.CommandError]:
    """Connection failures carry no SQLSTATE: the server's (English) words tell the caller's mistakes."""
    if (
        "authentication failed" in text
        or "pg_hba.conf" in text
        or ("role" in text and "does not exist" in text)
    ):
        return errors.Unauthenticated
    if "database" in text and "does not exist" in text:
        return errors.NotFound
    return errors.Unavailable


def _command_error(exc: psycopg.Error, target: _Target) -> errors.CommandError:
    diagnostic = exc.diag
    if diagnostic.message_primary:
        parts = [diagnostic.message_primary]
        if diagnostic.message_detail:
            parts.append(diagnostic.message_detail)
        if diagnostic.message_hint:
            parts.append(f"Hint: {diagnostic.message_hint}")
        text = ". ".join(part.rstrip(".") for part in parts) + "."
    else:
        text = str(exc) or type(exc).__name__
    name = type(exc).__name__
    if name == "QueryCanceled":
        text += " (statement_timeout_ms, or the call's deadline)"
    return _error_class(exc)(target.scrub(text), error_code=name)

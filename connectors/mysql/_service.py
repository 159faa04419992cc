"""The mysql servicer: each command built (``connectors._sql.statements``) and run on a pool.

The twin of postgres_v2: the same command names, parameters, schema shapes and result bodies
(``{"result": "ok"}``, ``{"result": "N rows affected", "rowcount": N}``, rows as lists or, with
``rows_as_objects``, objects), and the same error codes where the meaning is the same
(UndefinedTable, UniqueViolation, QueryCanceled, OperationalError...), so a diagram can move
between the two. Differences, all from MySQL itself:

- identifiers are quoted with backticks and never case-folded; values are escaped by PyMySQL on
  the client; ilike is ``LOWER(column) LIKE LOWER(value)`` (see ``_statements``);
- DoSQL runs one statement; without a row count it answers ``{"result": "0 rows affected"}``;
- the statement timeout is MariaDB's max_statement_time (any statement) or MySQL's
  max_execution_time (SELECT only), set for the session before each command;
- MySQL warnings (a value truncated, a table that did not exist) become spiff__logs lines.

Rows are JSON-safe (see ``_values``); errors are mapped in ``_errors``; connection strings and
pools are in ``_connections``.

Configuration (environment, read when the servicer is built; keyword arguments win):
    CONNECTOR_PROXY_MYSQL_POOL_SIZE        connections per connection string (default 5)
    CONNECTOR_PROXY_MYSQL_MAX_POOLS        connection strings with a pool at once (default 8)
    CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT  seconds to connect, or to wait for a pooled connection (10)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spiff.connector.mysql.v1 import mysql_pb2 as pb, mysql_pb2_grpc

from connectors._lazy import import_in_thread, lazy_import
from connectors._sql import execution, statements
from connectors._sql.connections import env_number
from connectors._sql.execution import affected
from connectors._sql.statements import Plan
from connectors._timing import ms_since
from server import errors, json_values, log
from server.egress import EgressPolicy

from ._statements import DIALECT
from ._values import JSON_TYPE, Outcome, rows

if TYPE_CHECKING:
    from . import _driver as driver
    from ._connections import Target
else:  # aiomysql and PyMySQL: imported by the first call (see _target), not by discovery
    driver = lazy_import("connectors.mysql._driver")

__all__ = ["MysqlService"]


class MysqlService(mysql_pb2_grpc.MysqlServiceServicer):
    """Runs each command in one transaction on a pooled connection to its server.

    Args:
        pool_size: connections per connection string (CONNECTOR_PROXY_MYSQL_POOL_SIZE, 5).
        max_pools: connection strings with an open pool (CONNECTOR_PROXY_MYSQL_MAX_POOLS, 8).
        connect_timeout: seconds to connect or to wait for a free pooled connection
            (CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT, 10).
        egress: which servers may be reached; by default the proxy's egress settings (``server.egress``).
    """

    def __init__(
        self,
        *,
        pool_size: int | None = None,
        max_pools: int | None = None,
        connect_timeout: float | None = None,
        egress: EgressPolicy | None = None,
    ) -> None:
        self._egress = egress or EgressPolicy.from_env()
        self._pool_size = pool_size or int(env_number("CONNECTOR_PROXY_MYSQL_POOL_SIZE", 5))
        self._max_pools = max_pools or int(env_number("CONNECTOR_PROXY_MYSQL_MAX_POOLS", 8))
        self._connect_timeout = connect_timeout or env_number("CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT", 10)
        self._pool_cache: driver.Pools | None = None

    @property
    def _pools(self) -> driver.Pools:
        """The pools, created by the first call that needs one (with the driver)."""
        if self._pool_cache is None:
            self._pool_cache = driver.Pools(
                size=self._pool_size,
                max_pools=self._max_pools,
                connect_timeout=self._connect_timeout,
                egress=self._egress,
            )
        return self._pool_cache

    async def aclose(self) -> None:
        """Closes every pool; the next call opens new ones."""
        if self._pool_cache is not None:
            await self._pool_cache.close()

    async def CreateTableV2(self, request: pb.CreateTableV2Request, context: Any) -> pb.CreateTableV2Response:
        target = await _target(request.database_connection_str)
        await self._run(target, statements.create_table(DIALECT, request), context)
        return pb.CreateTableV2Response(result="ok")

    async def DropTableV2(self, request: pb.DropTableV2Request, context: Any) -> pb.DropTableV2Response:
        target = await _target(request.database_connection_str)
        await self._run(target, statements.drop_table(DIALECT, request), context)
        return pb.DropTableV2Response(result="ok")

    async def InsertValuesV2(
        self, request: pb.InsertValuesV2Request, context: Any
    ) -> pb.InsertValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.insert_values(DIALECT, request), context)
        return pb.InsertValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def SelectValuesV2(
        self, request: pb.SelectValuesV2Request, context: Any
    ) -> pb.SelectValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.select_values(DIALECT, request), context)
        return pb.SelectValuesV2Response(body=json_values.dump(rows(outcome, request.rows_as_objects)))

    async def UpdateValuesV2(
        self, request: pb.UpdateValuesV2Request, context: Any
    ) -> pb.UpdateValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.update_values(DIALECT, request), context)
        return pb.UpdateValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DeleteValuesV2(
        self, request: pb.DeleteValuesV2Request, context: Any
    ) -> pb.DeleteValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.delete_values(DIALECT, request), context)
        return pb.DeleteValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DoSQL(self, request: pb.DoSQLRequest, context: Any) -> pb.DoSQLResponse:
        target = await _target(request.database_connection_str)
        plan = statements.do_sql(DIALECT, request)
        outcome = await self._run(target, plan, context)
        fetched = rows(outcome, request.rows_as_objects) if plan.fetch else None
        return pb.DoSQLResponse(body=json_values.dump(execution.sql_result(outcome, fetched)))

    async def _run(self, target: Target, plan: Plan[str], context: Any) -> Outcome:
        """Runs the plan in one transaction on a pooled connection, under the statement timeout."""
        deadline = execution.deadline(context)
        log(execution.statement_text(plan.query))
        started = time.perf_counter()
        try:
            async with self._pools.connection(target, deadline) as conn:
                return await _execute(conn, plan, deadline - asyncio.get_running_loop().time())
        except driver.Error as exc:
            log(f"-> {driver.error_code(exc)} after {ms_since(started)} ms")
            raise driver.command_error(exc, target) from exc
        except errors.CommandError:
            log(f"-> failed after {ms_since(started)} ms")
            raise


async def _target(conninfo: str) -> Target:
    """The parsed connection string. The first call imports the driver in a worker thread: about
    70 ms that the event loop does not wait."""
    await import_in_thread(driver)
    return driver.parse_target(conninfo)


async def _execute(conn: Any, plan: Plan[str], budget: float) -> Outcome:
    """Runs the plan under the session's statement time limit; warnings go to spiff__logs."""
    timeout_ms = execution.statement_timeout(plan.timeout_ms, budget)
    started = time.perf_counter()
    async with conn.cursor(driver.LoggingCursor) as cursor:
        if "MariaDB" in conn.get_server_info():
            await cursor.execute("SET SESSION max_statement_time = %s", [timeout_ms / 1000])
        else:
            await cursor.execute("SET SESSION max_execution_time = %s", [timeout_ms])
        if plan.many is not None:
            rowcount = await cursor.executemany(plan.query, plan.many) if plan.many else 0
        else:
            await cursor.execute(_bind(conn, plan))
            rowcount = cursor.rowcount
        outcome = Outcome(max(rowcount or 0, 0))
        if plan.fetch and cursor.description is not None:
            fetched = list(await cursor.fetchall())
            names = [column[0] for column in cursor.description]
            json_columns = frozenset(
                i for i, column in enumerate(cursor.description) if column[1] == JSON_TYPE
            )
            outcome = Outcome(len(fetched), fetched, names, json_columns)
    execution.log_outcome(outcome, started)
    return outcome


def _bind(conn: Any, plan: Plan[str]) -> str:
    """The statement with its values escaped in, as PyMySQL would, but reporting a mismatch
    between values and placeholders as the caller's mistake. A statement the connector built is
    always formatted (its ``%`` are doubled); DoSQL's own SQL only when it has values."""
    if plan.params is None and plan.verbatim:
        return plan.query
    params = () if plan.params is None else plan.params
    try:
        if isinstance(params, Mapping):
            return plan.query % {key: conn.escape(value) for key, value in params.items()}
        return plan.query % tuple(conn.escape(value) for value in params)
    except (TypeError, ValueError, KeyError) as exc:
        msg = f"schema.values do not fit the statement's placeholders ({type(exc).__name__}: {exc})."
        raise errors.InvalidArgument(msg, error_code="ProgrammingError") from None

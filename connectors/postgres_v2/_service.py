"""The postgres_v2 servicer: each command built (``connectors._sql.statements``) and run on a pool.

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
to values with ``rows_as_objects``; values are JSON-safe (see ``_values``).

Safety:
    identifiers   always quoted, plain names folded to lower case (see ``_statements``).
    values        always bound parameters: an object becomes jsonb, a list an array.
    column types  cannot be bound, so CreateTableV2 accepts only a strict grammar and rebuilds
                  the text from its tokens (see ``_types``).
    time          each command runs in one transaction under a local statement_timeout
                  (statement_timeout_ms, default 30 s, never past the call's deadline less 0.5 s).
    secrets       the connection string and its passwords never reach logs, spiff__logs or
                  messages (see ``_connections``).

Connections: one ``psycopg_pool.AsyncConnectionPool`` per connection string (see ``_connections``);
at most ``max_pools`` pools, the least recently used idle one closed beyond that; all closed by
aclose().

Errors carry the psycopg exception class name as error_code, as the old connector's did
(``UndefinedTable``, ``UniqueViolation``, ``OperationalError``...), with the gRPC code from the
SQLSTATE (see ``_errors``), plus InvalidParameters, PoolTimeout and EgressDenied (the egress
policy, ``server.egress``, does not allow the host).

Configuration (environment, read when the servicer is built; keyword arguments win):
    CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE        connections per database (default 5)
    CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS        databases with a pool at once (default 8)
    CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT  seconds to connect, or to wait for a pooled
                                                 connection (default 10)
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from spiff.connector.postgres_v2.v1 import postgres_v2_pb2 as pb, postgres_v2_pb2_grpc

from connectors._lazy import import_in_thread, lazy_import
from connectors._sql import execution, statements
from connectors._sql.connections import Target, env_number
from connectors._sql.execution import Outcome, affected
from connectors._sql.statements import Plan
from connectors._timing import ms_since
from server import errors, json_values, log
from server.egress import EgressPolicy

if TYPE_CHECKING:
    import psycopg

    from . import _driver as driver
    from ._connections import Connection
    from ._statements import Fragment
else:  # psycopg and psycopg_pool: imported by the first call (see _target), not by discovery
    driver = lazy_import("connectors.postgres_v2._driver")

__all__ = ["PostgresV2Service"]


class PostgresV2Service(postgres_v2_pb2_grpc.PostgresV2ServiceServicer):
    """Runs each command in one transaction on a pooled connection to its database.

    Args:
        pool_size: connections per connection string (CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE, 5).
        max_pools: connection strings with an open pool (CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS, 8).
        connect_timeout: seconds to connect or to wait for a free pooled connection
            (CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT, 10).
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
        self._pool_size = pool_size or int(env_number("CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE", 5))
        self._max_pools = max_pools or int(env_number("CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS", 8))
        self._connect_timeout = connect_timeout or env_number(
            "CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT", 10
        )
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
        await self._run(target, statements.create_table(driver.DIALECT, request), context)
        return pb.CreateTableV2Response(result="ok")

    async def DropTableV2(self, request: pb.DropTableV2Request, context: Any) -> pb.DropTableV2Response:
        target = await _target(request.database_connection_str)
        await self._run(target, statements.drop_table(driver.DIALECT, request), context)
        return pb.DropTableV2Response(result="ok")

    async def InsertValuesV2(
        self, request: pb.InsertValuesV2Request, context: Any
    ) -> pb.InsertValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.insert_values(driver.DIALECT, request), context)
        return pb.InsertValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def SelectValuesV2(
        self, request: pb.SelectValuesV2Request, context: Any
    ) -> pb.SelectValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.select_values(driver.DIALECT, request), context)
        return pb.SelectValuesV2Response(body=json_values.dump(driver.rows(outcome, request.rows_as_objects)))

    async def UpdateValuesV2(
        self, request: pb.UpdateValuesV2Request, context: Any
    ) -> pb.UpdateValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.update_values(driver.DIALECT, request), context)
        return pb.UpdateValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DeleteValuesV2(
        self, request: pb.DeleteValuesV2Request, context: Any
    ) -> pb.DeleteValuesV2Response:
        target = await _target(request.database_connection_str)
        outcome = await self._run(target, statements.delete_values(driver.DIALECT, request), context)
        return pb.DeleteValuesV2Response(result=affected(outcome.rowcount), rowcount=outcome.rowcount)

    async def DoSQL(self, request: pb.DoSQLRequest, context: Any) -> pb.DoSQLResponse:
        target = await _target(request.database_connection_str)
        plan = statements.do_sql(driver.DIALECT, request)
        outcome = await self._run(target, plan, context)
        fetched = driver.rows(outcome, request.rows_as_objects) if plan.fetch else None
        return pb.DoSQLResponse(body=json_values.dump(execution.sql_result(outcome, fetched)))

    async def _run(self, target: Target, plan: Plan[Fragment], context: Any) -> Outcome:
        """Runs the plan in one transaction on a pooled connection, under the statement timeout."""
        deadline = execution.deadline(context)
        log(execution.statement_text(plan.query.as_string(None)))
        started = time.perf_counter()
        try:
            async with self._pools.connection(target, deadline) as conn:
                return await _execute(conn, plan, deadline - asyncio.get_running_loop().time())
        except driver.Error as exc:
            log(f"-> {type(exc).__name__} after {ms_since(started)} ms")
            raise driver.command_error(exc, target) from exc
        except errors.CommandError:
            log(f"-> failed after {ms_since(started)} ms")
            raise


async def _target(conninfo: str) -> Target:
    """The parsed connection string. The first call imports the driver in a worker thread: about
    160 ms that the event loop does not wait."""
    await import_in_thread(driver)
    return driver.parse_target(conninfo)


async def _execute(conn: Connection, plan: Plan[Fragment], budget: float) -> Outcome:
    """Runs the plan under a transaction-local statement_timeout; notices go to spiff__logs."""
    timeout_ms = execution.statement_timeout(plan.timeout_ms, budget)
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
                if plan.verbatim:  # DoSQL reports the last of several statements
                    while cursor.nextset():
                        pass
                rowcount = cursor.rowcount
            outcome = Outcome(rowcount)
            if plan.fetch and cursor.description is not None:
                fetched = await cursor.fetchall()
                outcome = Outcome(rowcount, fetched, [column.name for column in cursor.description])
    finally:
        conn.remove_notice_handler(notice)
    execution.log_outcome(outcome, started)
    return outcome

"""Connection strings and pools: one ``psycopg_pool.AsyncConnectionPool`` per connection string.

Each pool is opened lazily on the first call (after one direct connection attempt, so that a
refused connection or an unknown database is reported at once with the server's words rather
than after a pool timeout), with at most ``pool_size`` connections, idle ones closed after 5
minutes, checked before use.

The connection string and its passwords never reach logs, spiff__logs or messages: every message is
scrubbed of them, and a connection string that does not parse is reported without libpq's text
(which may quote it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from connectors._sql.connections import Entry, PoolCache, Target
from server import errors

from ._values import configure

__all__ = ["Connection", "Pools", "parse_target"]

APPLICATION_NAME = "spiff-connector-proxy"
MAX_IDLE = 300.0

Connection = psycopg.AsyncConnection[Any]
_Pool = AsyncConnectionPool[Connection]


def parse_target(conninfo: str) -> Target:
    """Parses a libpq connection string (key=value ...) or postgresql:// URI; the key is the string."""
    try:
        options = conninfo_to_dict(conninfo)
    except psycopg.Error:
        # libpq's message may quote the string, password included: say what is wrong without it.
        msg = "database_connection_str is not a libpq connection string (key=value ...) or postgresql:// URI."
        raise errors.InvalidParameters(
            msg, violations=[errors.Violation("database_connection_str", "is not a connection string or URI")]
        ) from None
    passwords = [str(options[key]) for key in ("password", "sslpassword") if options.get(key)]
    # Also as a URI writes them, percent-encoded: messages must not carry them in either form.
    secrets = {conninfo, *passwords, *(quote(p, safe="") for p in passwords)}
    host = str(options.get("host") or options.get("hostaddr") or "the local socket")
    port = str(options.get("port") or "5432")
    database = options.get("dbname")
    named = f'database "{database}"' if database else "the default database"
    return Target(conninfo, tuple(sorted(secrets, key=len, reverse=True)), f"{named} on {host}:{port}")


class Pools(PoolCache[_Pool]):
    """One lazily opened AsyncConnectionPool per connection string, at most ``max_pools``."""

    def __init__(self, *, size: int, max_pools: int, connect_timeout: float) -> None:
        super().__init__(size=size, max_pools=max_pools, connect_timeout=connect_timeout)
        self._opening: dict[str, asyncio.Task[Entry[_Pool]]] = {}

    @asynccontextmanager
    async def connection(self, target: Target, deadline: float) -> AsyncIterator[Connection]:
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
        for task in self._opening.values():
            task.cancel()
        await super().close()

    async def _close_pool(self, pool: _Pool) -> None:
        await pool.close()

    def _forget(self) -> None:
        super()._forget()
        self._opening.clear()

    async def _entry(self, target: Target, deadline: float) -> Entry[_Pool]:
        entry = self._cached(target.key)
        if entry is not None:
            return entry
        key = target.key
        task = self._opening.get(key)
        if task is None:
            task = self._opening[key] = asyncio.get_running_loop().create_task(self._open(target, deadline))
            task.add_done_callback(lambda done: self._opened(key, done))
        # Shielded: a caller that gives up does not cancel the opening others wait for.
        return await asyncio.shield(task)

    def _opened(self, key: str, task: asyncio.Task[Entry[_Pool]]) -> None:
        if self._opening.get(key) is task:
            del self._opening[key]
        if not task.cancelled():
            task.exception()  # retrieved here: callers that gave up must not leave it unretrieved

    async def _open(self, target: Target, deadline: float) -> Entry[_Pool]:
        await self._probe(target, deadline)
        pool: _Pool = AsyncConnectionPool(
            target.key,
            kwargs={
                "fallback_application_name": APPLICATION_NAME,
                "connect_timeout": max(2, math.ceil(self._connect_timeout)),
            },
            min_size=0,
            max_size=self._size,
            open=False,
            configure=configure,
            check=AsyncConnectionPool.check_connection,
            max_idle=MAX_IDLE,
            timeout=self._connect_timeout,
        )
        await pool.open()
        return await self._add(target, pool)

    async def _probe(self, target: Target, deadline: float) -> None:
        """Connects once, directly, so that a failure is reported with the server's own words."""
        wait = min(self._connect_timeout, deadline - asyncio.get_running_loop().time())
        if wait <= 0:
            msg = f"No time was left to connect to {target.where}."
            raise errors.DeadlineExceeded(msg, error_code="OperationalError")
        try:
            async with asyncio.timeout(wait):
                conn = await psycopg.AsyncConnection.connect(
                    target.key,
                    fallback_application_name=APPLICATION_NAME,
                    connect_timeout=max(2, math.ceil(wait)),
                )
        except TimeoutError:
            msg = f"Could not connect to {target.where} within {wait:.1f} s."
            raise errors.Unavailable(msg, error_code="OperationalError") from None
        await conn.close()

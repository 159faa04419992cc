"""Connection strings and pools: one ``psycopg_pool.AsyncConnectionPool`` per connection string.

Each pool is opened lazily on the first call (after one direct connection attempt, so that a
refused connection or an unknown database is reported at once with the server's words rather
than after a pool timeout), with at most ``pool_size`` connections, idle ones closed after 5
minutes, checked before use.

Every connection, direct or pooled, resolves its host(s) once and connects only to the addresses
the egress policy allows (given to libpq as ``hostaddr``, while ``host`` still names the server for
TLS verification and .pgpass); Unix-domain sockets are not network egress and are not checked.

The connection string and its passwords never reach logs, spiff__logs or messages: every message is
scrubbed of them, and a connection string that does not parse is reported without libpq's text
(which may quote it).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, cast
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_attempts_async, conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from connectors._sql.connections import Entry, PoolCache, Target
from server import errors
from server.egress import EgressDenied, EgressPolicy

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


class _CheckedConnection(psycopg.AsyncConnection[Any]):
    """Connects only to addresses the egress policy allows (a subclass per policy sets ``egress``)."""

    egress: ClassVar[EgressPolicy] = EgressPolicy()

    @classmethod
    async def _get_connection_params(cls, conninfo: str, **kwargs: Any) -> dict[str, Any]:
        params = await super()._get_connection_params(conninfo, **kwargs)
        return await _checked_params(cls.egress, params)


async def _checked_params(policy: EgressPolicy, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters with every host resolved once (psycopg's own resolution) into the allowed
    ``hostaddr`` values, so that libpq connects to those and resolves nothing again.

    Raises:
        EgressDenied: every host, or every address of every host, is denied.
        psycopg.OperationalError: no host resolves.
    """
    for host in str(params.get("host") or "").split(","):
        if host and not _local(host):
            policy.check_host(host, _port(params), connector="postgres_v2")
    hosts: list[tuple[str, str, str]] = []
    denied: EgressDenied | None = None
    for attempt in await conninfo_attempts_async(params):
        host, hostaddr = str(attempt.get("host") or ""), str(attempt.get("hostaddr") or "")
        port = str(attempt.get("port") or "")
        if not hostaddr:  # a Unix-domain socket
            entry = (host, "", port)
        else:
            try:
                policy.permitted(host or hostaddr, _port(attempt), [hostaddr], connector="postgres_v2")
            except EgressDenied as exc:
                denied = exc
                continue
            entry = (host or hostaddr, hostaddr, port)
        if entry not in hosts:
            hosts.append(entry)
    if denied is not None and not hosts:
        raise denied
    checked = {
        **params,
        "host": ",".join(host for host, _, _ in hosts),
        "hostaddr": ",".join(hostaddr for _, hostaddr, _ in hosts),
    }
    if any(port for _, _, port in hosts):
        checked["port"] = ",".join(port for _, _, port in hosts)
    return checked


def _local(host: str) -> bool:
    return host.startswith(("/", "@")) or host[1:2] == ":"  # a socket directory, abstract or on Windows


def _port(params: dict[str, Any]) -> int:
    text = str(params.get("port") or "5432").split(",")[0]
    return int(text) if text.isdigit() else 5432


class Pools(PoolCache[_Pool]):
    """One lazily opened AsyncConnectionPool per connection string, at most ``max_pools``.

    Args:
        egress: where connections may go (each is checked when it is made).
    """

    def __init__(
        self, *, size: int, max_pools: int, connect_timeout: float, egress: EgressPolicy | None = None
    ) -> None:
        super().__init__(size=size, max_pools=max_pools, connect_timeout=connect_timeout)
        self._opening: dict[str, asyncio.Task[Entry[_Pool]]] = {}
        attributes = {"egress": egress or EgressPolicy.from_env()}
        self._connection_class = cast(
            "type[Connection]", type("CheckedConnection", (_CheckedConnection,), attributes)
        )

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
            connection_class=self._connection_class,
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
                conn = await self._connection_class.connect(
                    target.key,
                    fallback_application_name=APPLICATION_NAME,
                    connect_timeout=max(2, math.ceil(wait)),
                )
        except TimeoutError:
            msg = f"Could not connect to {target.where} within {wait:.1f} s."
            raise errors.Unavailable(msg, error_code="OperationalError") from None
        await conn.close()

"""Connection strings and pools: one aiomysql pool per connection string.

A connection string is a ``mysql://`` (or ``mariadb://``) URI or key=value pairs; the password
never reaches logs, spiff__logs or messages, which are scrubbed of it and of the string itself.
Each pool is created lazily on the first call, with at most ``pool_size`` connections, recycled
after 5 minutes, pinged before use. Its host is resolved once, when it is created, and the pool
connects to the first address the egress policy allows (``server.egress``); TLS still verifies the
server's certificate against the host name.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]

from connectors._sql import connections
from connectors._sql.connections import Entry, PoolCache
from server import errors
from server.egress import EgressPolicy

__all__ = ["Pools", "Target", "parse_target"]

MAX_IDLE = 300


@dataclass(frozen=True)
class Target(connections.Target):
    """A parsed connection string, with aiomysql's arguments for it."""

    options: dict[str, Any]


_PAIR = re.compile(r"\s*([A-Za-z_]+)\s*=\s*('(?:[^'\\]|\\.)*'|[^\s']*)")
_KEYS = {"host", "port", "user", "password", "database", "dbname", "charset", "ssl"}


def parse_target(conninfo: str) -> Target:
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
    return Target(conninfo, tuple(sorted(secrets, key=len, reverse=True)), where, options)


class _NamedTLSContext(ssl.SSLContext):
    """Verifies the server's certificate against ``server_name``: aiomysql gives the address it
    connects to as the TLS server name, and the pool connects to a checked address."""

    server_name: str

    def wrap_bio(
        self,
        incoming: ssl.MemoryBIO,
        outgoing: ssl.MemoryBIO,
        server_side: bool = False,
        server_hostname: str | bytes | None = None,
        session: ssl.SSLSession | None = None,
    ) -> ssl.SSLObject:
        return super().wrap_bio(incoming, outgoing, server_side, self.server_name, session)


def named_tls_context(server_name: str) -> ssl.SSLContext:
    """``ssl.create_default_context()``'s settings, verifying certificates for ``server_name``."""
    context = _NamedTLSContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    context.server_name = server_name
    return context


class Pools(PoolCache[Any]):
    """One lazily created aiomysql pool per connection string, at most ``max_pools``.

    Args:
        egress: where connections may go (checked when a pool is created).
    """

    def __init__(
        self, *, size: int, max_pools: int, connect_timeout: float, egress: EgressPolicy | None = None
    ) -> None:
        super().__init__(size=size, max_pools=max_pools, connect_timeout=connect_timeout)
        self._egress = egress or EgressPolicy.from_env()

    @asynccontextmanager
    async def connection(self, target: Target, deadline: float) -> AsyncIterator[Any]:
        """A pooled connection in a transaction, committed on success, rolled back on error."""
        loop = asyncio.get_running_loop()
        entry = await self._entry(target, deadline)
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

    async def _acquire(self, entry: Entry[Any], target: Target, wait: float) -> Any:
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

    async def _close_pool(self, pool: Any) -> None:
        pool.close()
        await pool.wait_closed()

    async def _entry(self, target: Target, deadline: float) -> Entry[Any]:
        entry = self._cached(target.key)
        if entry is not None:
            return entry
        options = await self._checked_options(target, deadline)
        entry = self._cached(target.key)  # opened by another call meanwhile
        if entry is not None:
            return entry
        pool = await aiomysql.create_pool(
            minsize=0,
            maxsize=self._size,
            pool_recycle=MAX_IDLE,
            connect_timeout=max(1, math.ceil(self._connect_timeout)),
            autocommit=False,
            **options,
        )
        return await self._add(target, pool)

    async def _checked_options(self, target: Target, deadline: float) -> dict[str, Any]:
        """aiomysql's arguments with the host resolved once into the first allowed address.

        Raises:
            EgressDenied: the host name or every address is denied.
            pymysql.err.OperationalError: the host does not resolve in time (MySQL error 2003, as
                aiomysql reports it).
        """
        host, port = target.options["host"], target.options["port"]
        wait = max(min(self._connect_timeout, deadline - asyncio.get_running_loop().time()), 0.001)
        try:
            async with asyncio.timeout(wait):
                addresses = await self._egress.resolve(host, port, connector="mysql")
        except (OSError, TimeoutError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no answer in time"
            raise pymysql.err.OperationalError(
                2003, f"Can't connect to MySQL server on {host!r} ({reason})"
            ) from None
        options = {**target.options, "host": addresses[0]}
        if "ssl" in options:
            options["ssl"] = named_tls_context(host)
        return options

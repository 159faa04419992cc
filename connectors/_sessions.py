"""One pooled aiohttp session per connector, opened lazily inside the running event loop, and how
its failures read in log lines and error messages."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import aiohttp

__all__ = ["SessionPool", "failure_reason"]


class SessionPool:
    """Hands out the connector's session, opening it on first use (an aiohttp session belongs
    to the loop that made it, so a new loop gets a new one) and closing it on ``aclose``."""

    def __init__(self, factory: Callable[[], aiohttp.ClientSession]) -> None:
        self._factory = factory
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._loop is not loop:
            self._session, self._loop = self._factory(), loop
        return self._session

    async def aclose(self) -> None:
        """Closes the session; the next call opens a new one."""
        session, self._session, self._loop = self._session, None, None
        if session is not None:
            await session.close()


def failure_reason(exc: aiohttp.ClientError) -> str:
    """``cannot connect to host:443 (Connection refused)``, or the error's class name."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        detail = exc.os_error.strerror or type(exc.os_error).__name__
        return f"cannot connect to {exc.host}:{exc.port} ({detail})"
    return type(exc).__name__

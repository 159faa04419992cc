"""Connection strings and the cache of pools opened for them.

A connector parses its connection string into a ``Target`` (which also scrubs the string and its
passwords out of any text) and keeps one pool per connection string in a ``PoolCache``: opened
lazily on the loop that first needs it, at most ``max_pools`` at once (the least recently used
idle one closed beyond that), all closed by ``close()``.
"""

from __future__ import annotations

import asyncio
import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

from server import log

__all__ = ["Entry", "PoolCache", "Target", "env_number"]

Pool = TypeVar("Pool")


def env_number(name: str, default: float) -> float:
    """A positive number from the environment, or the default when the variable is unset or blank."""
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


@dataclass(frozen=True)
class Target:
    """A parsed connection string: its pool's key, what to scrub, how to name it in logs."""

    key: str  # the connection string as given
    secrets: tuple[str, ...]  # longest first: the string itself, its passwords, as typed and encoded
    where: str

    def scrub(self, text: str) -> str:
        """The text without the secrets, on one line."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return " ".join(text.split())


@dataclass
class Entry(Generic[Pool]):
    pool: Pool
    users: int = 0  # commands holding or waiting for one of its connections


class PoolCache(Generic[Pool]):
    """Pools by connection string, least recently used first; a subclass opens and closes them."""

    def __init__(self, *, size: int, max_pools: int, connect_timeout: float) -> None:
        self._size = max(1, size)
        self._max_pools = max(1, max_pools)
        self._connect_timeout = connect_timeout
        self._entries: OrderedDict[str, Entry[Pool]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None

    async def close(self) -> None:
        """Closes every pool; the next call opens new ones."""
        entries = list(self._entries.values())
        self._forget()
        for entry in entries:
            await self._close_pool(entry.pool)

    async def _close_pool(self, pool: Pool) -> None:
        raise NotImplementedError

    def _forget(self) -> None:
        """Drops every pool without closing it (they belong to a loop that is gone)."""
        self._entries.clear()

    def _cached(self, key: str) -> Entry[Pool] | None:
        """The open pool for the key on this loop, now the most recently used, if there is one."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # pools belong to the loop that opened them
            self._forget()
            self._loop = loop
        entry = self._entries.get(key)
        if entry is not None:
            self._entries.move_to_end(key)
        return entry

    async def _add(self, target: Target, pool: Pool) -> Entry[Pool]:
        """Keeps a newly opened pool, closing the least recently used idle ones beyond max_pools."""
        entry = self._entries[target.key] = Entry(pool)
        log(f"Opened a pool of up to {self._size} connections to {target.where}.")
        while len(self._entries) > self._max_pools:
            idle = next((k for k, e in self._entries.items() if e.users == 0 and k != target.key), None)
            if idle is None:
                break  # every other pool is in use: stay over the bound until one is idle
            await self._close_pool(self._entries.pop(idle).pool)
        return entry

"""Bulkheads: each connector's blocking work runs in a bounded thread pool of its own.

A blocking (``def``) command, and whatever an ``async def`` command hands to :func:`run_blocking`
(an SDK call, a DNS lookup, reading a certificate), takes one of its connector's threads. When
all of them are taken, the call is refused at once with :class:`~server.errors.ConnectorBusy`
(503 with ``Retry-After``) instead of waiting behind them: a dependency that hangs fills its own
connector's pool and no other.

Python cannot stop a thread. A call that runs out of time is answered (DeadlineExceeded) while
its thread goes on; the thread stays counted until the work really ends, so a hung dependency
shows as a busy connector rather than as threads that pile up without bound.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import os
import threading
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

from server.errors import ConnectorBusy

__all__ = [
    "DEFAULT_THREADS",
    "Bulkhead",
    "Bulkheads",
    "configure",
    "reset",
    "run_blocking",
    "shared",
    "using",
]

_P = ParamSpec("_P")
_T = TypeVar("_T")

DEFAULT_THREADS = 32

_current: contextvars.ContextVar[Bulkhead | None] = contextvars.ContextVar("bulkhead", default=None)


class Bulkhead:
    """One connector's pool: at most ``size`` pieces of blocking work at a time, none queued."""

    def __init__(self, name: str, size: int) -> None:
        if size < 1:
            msg = f"a bulkhead needs at least one thread, got {size}"
            raise ValueError(msg)
        self.name = name
        self.size = size
        self._busy = 0
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    @property
    def busy(self) -> int:
        """Threads running work now, including work whose caller has stopped waiting."""
        return self._busy

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:  # made on first use: most connectors never block
            self._executor = concurrent.futures.ThreadPoolExecutor(self.size, thread_name_prefix=self.name)
        return self._executor

    def _release(self, _: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._busy -= 1

    async def run(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        """``fn(*args, **kwargs)`` in one of the pool's threads, with the caller's context variables.

        Raises:
            ConnectorBusy: every thread is taken; nothing was started.
        """
        with self._lock:
            if self._busy >= self.size:
                msg = (
                    f"The {self.name} connector is busy: all {self.size} of its threads are running "
                    "calls (a slow or unresponsive dependency?). Nothing was started; try again later."
                )
                raise ConnectorBusy(msg)
            self._busy += 1
        try:
            context = contextvars.copy_context()
            future = self._pool().submit(context.run, functools.partial(fn, *args, **kwargs))
        except BaseException:
            with self._lock:
                self._busy -= 1
            raise
        # Released when the work ends, or when it is cancelled before it starts; never when the
        # awaiting caller merely gives up (a deadline), since the thread is still busy then.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self) -> None:
        """Stops taking work; threads still running finish in the background."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


class Bulkheads:
    """The bulkhead of every connector, made on first use: ``threads`` each unless ``sizes`` says
    otherwise for a connector (by name)."""

    def __init__(self, threads: int = DEFAULT_THREADS, sizes: Mapping[str, int] | None = None) -> None:
        self.threads = threads
        self.sizes = dict(sizes or {})
        self._by_name: dict[str, Bulkhead] = {}
        self._lock = threading.Lock()

    def __getitem__(self, connector: str) -> Bulkhead:
        bulkhead = self._by_name.get(connector)
        if bulkhead is None:
            with self._lock:
                bulkhead = self._by_name.get(connector)
                if bulkhead is None:
                    bulkhead = Bulkhead(connector, self.sizes.get(connector, self.threads))
                    self._by_name[connector] = bulkhead
        return bulkhead

    def all(self) -> list[Bulkhead]:
        """The bulkheads made so far."""
        return list(self._by_name.values())

    def shutdown(self) -> None:
        for bulkhead in self.all():
            bulkhead.shutdown()


_shared = Bulkheads()


def configure(threads: int, sizes: Mapping[str, int]) -> Bulkheads:
    """Sets the process's pool sizes (from the settings, before the first call)."""
    global _shared
    _shared.shutdown()
    _shared = Bulkheads(threads, sizes)
    return _shared


def shared() -> Bulkheads:
    """The process's bulkheads, one per connector."""
    return _shared


def _after_fork() -> None:  # a forked child has the parent's pools without their threads
    global _shared
    _shared = Bulkheads(_shared.threads, _shared.sizes)


os.register_at_fork(after_in_child=_after_fork)


def using(bulkhead: Bulkhead) -> contextvars.Token[Bulkhead | None]:
    """Makes ``bulkhead`` the one :func:`run_blocking` uses in this context; reset with the token."""
    return _current.set(bulkhead)


def reset(token: contextvars.Token[Bulkhead | None]) -> None:
    _current.reset(token)


async def run_blocking(fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
    """Runs blocking ``fn`` in the running command's connector pool (see the module's docstring);
    outside a command, in asyncio's default pool. What connectors use instead of
    ``asyncio.to_thread``.

    Raises:
        ConnectorBusy: the connector's threads are all taken.
    """
    bulkhead = _current.get()
    if bulkhead is None:
        return await asyncio.to_thread(fn, *args, **kwargs)
    return await bulkhead.run(fn, *args, **kwargs)

"""Heavy SDKs imported on a connector's first use rather than when discovery imports it.

Discovery imports every connector at start-up, so a module-level ``import boto3`` would cost every
proxy its memory and start-up time (about 11 MiB and 120 ms) even when no diagram calls aws. A
connector imports such a package as::

    if TYPE_CHECKING:
        import aiosmtplib
    else:  # imported on first use, not by discovery (connectors._lazy)
        aiosmtplib = lazy_import("aiosmtplib")

and uses it as usual (``aiosmtplib.SMTP(...)``, ``except aiosmtplib.SMTPException``): the first
attribute read imports the module, the type checker sees the real one. Unlike
``importlib.util.LazyLoader``, nothing enters ``sys.modules`` before the import really happens.

Plain ``def`` commands run in worker threads, where the first import blocks nobody. An ``async def``
command whose SDK is slow to import (psycopg: about 160 ms) awaits ``import_in_thread(module)``
before using it, so that the first call does not stall the event loop; the import takes a thread
of the connector's own pool, like its other blocking work.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from server import run_blocking

__all__ = ["import_in_thread", "lazy_import"]


class _LazyModule:
    """Stands for a module until one of its attributes is read, then imports it and defers to it."""

    # Dunder names: no module has attributes of these names for them to hide.
    __slots__ = ("__lazy_module__", "__lazy_name__")

    def __init__(self, name: str) -> None:
        self.__lazy_name__ = name
        self.__lazy_module__: ModuleType | None = None

    def __getattr__(self, attr: str) -> Any:
        return getattr(_load(self), attr)

    def __repr__(self) -> str:
        state = "imported" if self.__lazy_module__ is not None else "not imported yet"
        return f"<lazy module {self.__lazy_name__!r}, {state}>"


def _load(lazy: _LazyModule) -> ModuleType:
    if lazy.__lazy_module__ is None:
        # The import system serializes concurrent imports of a module: every thread gets the same one.
        lazy.__lazy_module__ = importlib.import_module(lazy.__lazy_name__)
    return lazy.__lazy_module__


def lazy_import(name: str) -> Any:
    """The module ``name``, imported when one of its attributes is first read."""
    return _LazyModule(name)


async def import_in_thread(*modules: object) -> None:
    """Imports the lazily imported ``modules`` that are not imported yet, in a worker thread.

    Returns at once when they all are (every call after the first).
    """
    pending = [m for m in modules if isinstance(m, _LazyModule) and m.__lazy_module__ is None]
    if pending:
        await run_blocking(lambda: [_load(m) for m in pending])

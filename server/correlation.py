"""Which call a piece of work belongs to: the request id, and what travels with a call.

A request id names one call of the proxy from its arrival to its last consequence: it is taken
from the caller's ``X-Request-Id`` (or made up), returned in the answer, sent to upstream gRPC
servers as ``x-request-id`` metadata, kept with the job a call becomes and sent with its callback,
and written into every log line written meanwhile. One grep finds a service task's whole story.

What must survive a hop that loses the task's context (a job stored now and run later, maybe by
another process) travels as a *carrier*, a small ``str -> str`` mapping: :func:`carrier` takes it
from the current context, :func:`restored` brings it back. The request id is always in it;
a :class:`Propagator` registered with :func:`register` adds its own entries (trace context).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Protocol

__all__ = [
    "ACCESS_LOGGER",
    "REQUEST_ID_HEADER",
    "Propagator",
    "accept_request_id",
    "bind",
    "bound",
    "carrier",
    "register",
    "request_id",
    "restored",
    "unbind",
]

REQUEST_ID_HEADER = "x-request-id"  # also the gRPC metadata key and the carrier's key
ACCESS_LOGGER = "access"  # the logger of the one line per call answered (REST and gRPC)
# What a request id may be when a caller chooses it: printable, no spaces, bounded, so it is safe
# in a log line, a header and a metadata value.
_ACCEPTABLE = re.compile(r"[A-Za-z0-9._:/+=@-]{1,128}")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class _Ids:
    """New request ids: a random prefix per process and a counter, 32 hex digits in all (cheaper
    than a UUID per request: no system call). Unique, not secret; a forked child draws a new prefix."""

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self.prefix = os.urandom(10).hex()
        self.counter = itertools.count(1)

    def new(self) -> str:
        return f"{self.prefix}{next(self.counter):012x}"


_ids = _Ids()
os.register_at_fork(after_in_child=_ids.reseed)


class Propagator(Protocol):
    """Something more that travels with a call through a job (e.g. the W3C trace context)."""

    def inject(self, carrier: dict[str, str]) -> None:
        """Adds the current context's entries to ``carrier``."""
        ...

    def attach(self, carrier: Mapping[str, str]) -> AbstractContextManager[None]:
        """Makes the context ``carrier`` describes current while the returned manager is entered."""
        ...


_propagators: list[Propagator] = []


def register(propagator: Propagator) -> None:
    """Adds ``propagator`` to what :func:`carrier` takes and :func:`restored` brings back."""
    _propagators.append(propagator)


def request_id() -> str | None:
    """The request id of the call being handled, if any."""
    return _request_id.get()


def accept_request_id(given: str | None) -> str:
    """The request id of a new call: ``given`` (a caller's ``X-Request-Id``) when it is an
    acceptable one, else a new one (32 hex digits)."""
    if given is not None and _ACCEPTABLE.fullmatch(given):
        return given
    return _ids.new()


def bind(value: str | None) -> contextvars.Token[str | None]:
    """Makes ``value`` the current request id until :func:`unbind` (the hot path's form of
    :func:`bound`)."""
    return _request_id.set(value)


def unbind(token: contextvars.Token[str | None]) -> None:
    """Undoes the :func:`bind` that returned ``token``."""
    _request_id.reset(token)


@contextlib.contextmanager
def bound(value: str | None) -> Iterator[None]:
    """Makes ``value`` the current request id while the block runs."""
    token = bind(value)
    try:
        yield
    finally:
        unbind(token)


def carrier() -> dict[str, str]:
    """What travels with the current call through a job: its request id and every registered
    propagator's entries (empty outside a call)."""
    taken: dict[str, str] = {}
    current = _request_id.get()
    if current is not None:
        taken[REQUEST_ID_HEADER] = current
    for propagator in _propagators:
        propagator.inject(taken)
    return taken


@contextlib.contextmanager
def restored(taken: Mapping[str, str] | None) -> Iterator[None]:
    """Brings back, while the block runs, the context a :func:`carrier` was taken from."""
    taken = taken or {}
    with contextlib.ExitStack() as stack:
        stack.enter_context(bound(taken.get(REQUEST_ID_HEADER)))
        for propagator in _propagators:
            stack.enter_context(propagator.attach(taken))
        yield

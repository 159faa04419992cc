"""Admission control: how many calls, and how many bytes of their bodies, a process holds at once.

Beyond either limit a new call is refused at once with :class:`~server.errors.ProxyBusy` (503 with
``Retry-After``, which spiff-arena retries) instead of queueing without bound: memory and latency
stay where the settings put them, and the caller learns that the proxy is busy rather than slow.

One :class:`Admission` serves a process: the REST shim and the gRPC port count against the same
limits, and a REST call answered in-process is counted once.
"""

from __future__ import annotations

from server.errors import ProxyBusy

__all__ = ["Admission", "Ticket"]


class Ticket:
    """One admitted call: what it holds until :meth:`release` (idempotent)."""

    __slots__ = ("_admission", "bytes")

    def __init__(self, admission: Admission, size: int) -> None:
        self._admission: Admission | None = admission
        self.bytes = size

    def grow(self, size: int) -> None:
        """Holds ``size`` more bytes (a body read in chunks).

        Raises:
            ProxyBusy: the process already holds as many bytes as it may; the ticket keeps
                what it held before.
        """
        admission = self._admission
        if admission is None:
            return
        if admission.bytes + size > admission.max_bytes:
            raise admission.refusal(calls=False)
        admission.bytes += size
        self.bytes += size

    def release(self) -> None:
        admission = self._admission
        if admission is not None:
            self._admission = None
            admission.calls -= 1
            admission.bytes -= self.bytes


class Admission:
    """Counts calls in flight and the bytes of their bodies, against two limits.

    Used from the event loop only (no locks): every change happens between two awaits.
    """

    def __init__(self, max_calls: int, max_bytes: int) -> None:
        if max_calls < 1 or max_bytes < 1:
            msg = "admission limits must be at least 1"
            raise ValueError(msg)
        self.max_calls = max_calls
        self.max_bytes = max_bytes
        self.calls = 0
        self.bytes = 0

    def admit(self, size: int = 0) -> Ticket:
        """Admits one call holding ``size`` bytes of body (more may follow with :meth:`Ticket.grow`).

        Raises:
            ProxyBusy: the process already holds ``max_calls`` calls, or the body would take it
                past ``max_bytes``.
        """
        if self.calls >= self.max_calls:
            raise self.refusal(calls=True)
        if self.bytes + size > self.max_bytes:
            raise self.refusal(calls=False)
        self.calls += 1
        self.bytes += size
        return Ticket(self, size)

    def refusal(self, *, calls: bool) -> ProxyBusy:
        """The error of a call refused for the calls limit (``calls``) or the bytes limit."""
        held = f"{self.max_calls} calls in flight" if calls else f"{self.max_bytes} bytes of request bodies"
        msg = f"The proxy is busy: it already holds {held}. Nothing was started; try again later."
        return ProxyBusy(msg)

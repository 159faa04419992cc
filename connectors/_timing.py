"""Time in the connectors: how long a call may take within its deadline, and elapsed time as the
log lines give it (``-> 200 in 12 ms``)."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["ms_since", "time_budget"]


def ms_since(started: float) -> int:
    """Whole milliseconds since ``started``, a ``time.perf_counter()`` reading."""
    return round((time.perf_counter() - started) * 1000)


def time_budget(timeout: float, context: Any, margin: float) -> float:
    """Seconds a call may take: ``timeout``, shortened to end ``margin`` seconds before the
    call's deadline when it has one (the result is negative when no time is left)."""
    remaining = context.time_remaining()
    return timeout if remaining is None else min(timeout, remaining - margin)

"""Elapsed time as the connectors' log lines give it (``-> 200 in 12 ms``)."""

from __future__ import annotations

import time

__all__ = ["ms_since"]


def ms_since(started: float) -> int:
    """Whole milliseconds since ``started``, a ``time.perf_counter()`` reading."""
    return round((time.perf_counter() - started) * 1000)

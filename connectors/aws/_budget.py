"""botocore's timeouts and retries fitted into what is left of the command's deadline.

botocore's defaults (60 s to connect, 60 s per read, several attempts) would keep a worker thread
on a hung endpoint long after the command ended. Each client is configured so that
``attempts * (connect + read) + backoff`` stays within the time the command has left when the client
is made. A client's configuration is fixed, so clients are cached per coarse budget (whole
seconds, rounded down): calls with the usual deadline share one client.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["DEADLINE_MARGIN", "Fit", "backoff_bound", "coarse_budget", "fit"]

DEADLINE_MARGIN = 0.5  # seconds kept to turn an answer or a failure into the command's result
MIN_ATTEMPT = 10.0  # seconds an attempt should get before a retry is worth planning
_FLOOR = 0.1  # the shortest timeout configured, so that botocore always gets a valid one


@dataclass(frozen=True)
class Fit:
    """A client's timeouts (seconds) and its total number of attempts."""

    connect_timeout: float
    read_timeout: float
    attempts: int


def coarse_budget(remaining: float | None) -> float | None:
    """The seconds a client may use, rounded down: whole seconds, tenths below one second
    (at least 0.1); None when the command has no deadline."""
    if remaining is None:
        return None
    usable = remaining - DEADLINE_MARGIN
    if usable >= 1:
        return float(math.floor(usable))
    return max(math.floor(usable * 10) / 10, _FLOOR)


def backoff_bound(attempts: int) -> float:
    """The longest total wait between ``attempts`` attempts in botocore's standard retry mode
    (a random part of 1 s, 2 s, 4 s... before the second, third, fourth...)."""
    return float(2 ** (attempts - 1) - 1)


def fit(connect_timeout: float, read_timeout: float, attempts: int, budget: float | None) -> Fit:
    """Timeouts and attempts within ``budget`` seconds: as many of the configured attempts as leave
    each at least MIN_ATTEMPT seconds (one at least), then the timeouts shortened to share the
    attempt's time (connect gets at most half).

    ``attempts * (connect + read) + backoff_bound(attempts) <= budget`` for any budget of at
    least 0.2 s.
    """
    if budget is None:
        return Fit(connect_timeout, read_timeout, attempts)
    chosen, per_attempt = 1, budget
    for count in range(max(attempts, 1), 0, -1):
        share = (budget - backoff_bound(count)) / count
        if share >= min(MIN_ATTEMPT, connect_timeout + read_timeout) or count == 1:
            chosen, per_attempt = count, share
            break
    connect = max(min(connect_timeout, per_attempt / 2), _FLOOR)
    read = max(min(read_timeout, per_attempt - connect), _FLOOR)
    return Fit(connect, read, chosen)

"""The ``Retry-After`` header (RFC 9110, section 10.2.3): how long a server asks a client to wait
before trying again, as the connectors that honour it read it."""

from __future__ import annotations

import datetime
import email.utils
import math

__all__ = ["retry_after"]


def retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date; None if neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = (when - datetime.datetime.now(datetime.UTC)).total_seconds()
    return max(seconds, 0.0) if math.isfinite(seconds) else None

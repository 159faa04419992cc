"""How the proxy's processes log: plain text (the default) or one JSON object per line
(``CONNECTOR_PROXY_LOG_FORMAT=json``), every line with the request id of the call it belongs to
(:mod:`server.correlation`), and the access log: one line per ``/v1/do`` answer.

A JSON line holds ``time`` (ISO 8601, UTC, milliseconds), ``level``, ``logger``, ``message``, and,
when known, ``request_id``, ``command``, ``status`` (HTTP) or ``code`` (gRPC), ``duration_ms``,
``error_code``; an exception adds ``exception`` (its traceback).

The access log is written in batches, like nginx's and Envoy's buffered access logs: an answer is
kept as it is when it leaves, and formatted and written with the others of the same moment at most
0.1 s later (at once when 256 are waiting, and at exit). Through :mod:`logging`, one JSON line would
cost about 9 µs of the event loop's time per request, 8% of a local command's whole cost; this way
it costs about 1.1 to 1.4 µs (measured in a loop). Its lines go to the same stream as the rest, in
the same shape, with the logger ``access`` (the gRPC port's lines too, which do go through
:mod:`logging`). Nothing of a request's parameters is ever in a line.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import sys
import time
from json.encoder import encode_basestring as _quote
from typing import Any, TextIO

from server import correlation
from server.correlation import ACCESS_LOGGER
from server.settings import Settings

__all__ = ["AccessLog", "JsonFormatter", "access_log_for", "configure_logging"]

_PLAIN = "%(asctime)s %(levelname)s %(name)s%(request_tag)s: %(message)s"
# Fields a record may carry (``extra=``) that a JSON line shows.
_MAX_PARTS = 1024  # the access log's remembered (command, status, error_code) line parts
_FIELDS = ("request_id", "command", "status", "code", "duration_ms", "error_code")
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


class _Clock:
    """Timestamps: made once per millisecond (busy, the same millisecond is asked for again and
    again), the part above the millisecond once per second."""

    def __init__(self, utc: bool) -> None:
        self.convert = time.gmtime if utc else time.localtime
        self.pattern = "%Y-%m-%dT%H:%M:%S" if utc else "%Y-%m-%d %H:%M:%S"
        self.suffix = "Z" if utc else ""
        self.separator = "." if utc else ","
        self.second = -1
        self.prefix = ""
        self.millisecond = -1
        self.last = ""

    def stamp(self, when: float) -> str:
        millisecond = int(when * 1000)
        if millisecond == self.millisecond:
            return self.last
        second, fraction = divmod(millisecond, 1000)
        if second != self.second:
            self.second, self.prefix = second, time.strftime(self.pattern, self.convert(second))
        self.millisecond, self.last = millisecond, f"{self.prefix}{self.separator}{fraction:03d}{self.suffix}"
        return self.last


class RequestIdFilter(logging.Filter):
    """Puts the current request id on every record (``request_id``, and ``request_tag``, `` [id]``
    or nothing, for the plain format), unless the record names one already."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or correlation.request_id()
        record.request_id = request_id
        record.request_tag = f" [{request_id}]" if request_id else ""
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (see the module doc for its fields)."""

    def __init__(self) -> None:
        super().__init__()
        self._clock = _Clock(utc=True)

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": self._clock.stamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        values = record.__dict__
        for name in _FIELDS:
            value = values.get(name)
            if value is not None and value != "":
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return _encode(line)


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Sends every logger's records at ``settings.log_level`` and above to ``stream`` (stderr), in
    ``settings.log_format``; replaces whatever handlers the root logger had (e.g. taskiq's)."""
    # No caller's file and line looked up for each record: the logger's name says where.
    logging._srcfile = None  # documented by logging as the way to skip it
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(_PLAIN))
    logging.basicConfig(level=settings.log_level, handlers=[handler], force=True)


class AccessLog:
    """The access log (:data:`rest_shim.AccessLog`): one line per ``/v1/do`` answer, in the
    format of the other lines, written in batches (see the module doc). Used on the event loop.

    Args:
        stream: where lines go (stderr).
        json_lines: JSON objects rather than plain text.
        flush_after: seconds a line may wait to be written.
        batch: lines that are written at once without waiting.
    """

    def __init__(
        self, stream: TextIO, *, json_lines: bool, flush_after: float = 0.1, batch: int = 256
    ) -> None:
        self.stream = stream
        self.json_lines = json_lines
        self.flush_after = flush_after
        self.batch = batch
        self._clock = _Clock(utc=json_lines)
        self._answers: list[tuple[float, str, int, str, float, str]] = []
        self._parts: dict[tuple[str, int, str], tuple[str, str, str]] = {}
        self._timer: asyncio.TimerHandle | None = None
        atexit.register(self.flush)

    def __call__(self, command: str, status: int, error_code: str, seconds: float, request_id: str) -> None:
        # Kept as it is and formatted with the rest of its batch: the answer leaves sooner.
        self._answers.append((time.time(), command, status, error_code, seconds, request_id))
        if len(self._answers) >= self.batch:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.flush_after, self.flush)
            except RuntimeError:  # no event loop: nothing would write it later
                self.flush()

    def _line(
        self, when: float, command: str, status: int, error_code: str, seconds: float, request_id: str
    ) -> str:
        stamp = self._clock.stamp(when)
        tenths = int(seconds * 10_000 + 0.5)  # of a millisecond; cheaper than round() and a float's repr
        milliseconds = f"{tenths // 10}.{tenths % 10}"
        parts = self._parts.get((command, status, error_code))
        if parts is None:
            if len(self._parts) >= _MAX_PARTS:  # error codes come from upstreams too: any text
                self._parts.clear()
            parts = self._parts[command, status, error_code] = self._parts_of(command, status, error_code)
        head, middle, tail = parts
        if self.json_lines:
            return (
                f'{{"time":"{stamp}",{head}{milliseconds}{middle}{_quote(request_id)}{tail}{milliseconds}}}'
            )
        return f"{stamp} INFO {ACCESS_LOGGER} [{request_id}]: {head}{milliseconds}{middle}"

    def _parts_of(self, command: str, status: int, error_code: str) -> tuple[str, str, str]:
        """What a line of an answer says besides its time, duration and request id: the same for
        every answer of one command with one status and error_code (so made once)."""
        outcome = f"{status} {error_code}" if error_code else str(status)
        if not self.json_lines:
            return f"{command} answered {outcome} in ", " ms", ""
        # JSON written out rather than through json.dumps (a third of the cost); every text is
        # quoted and escaped by json's own C function.
        message = _quote(f"{command} answered {outcome} in ")[:-1]
        error = f',"error_code":{_quote(error_code)}' if error_code else ""
        head = f'"level":"INFO","logger":"{ACCESS_LOGGER}","message":{message}'
        tail = f',"command":{_quote(command)},"status":{status}{error},"duration_ms":'
        return head, ' ms","request_id":', tail

    def flush(self) -> None:
        """Writes the waiting lines now."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._answers:
            return
        answers, self._answers = self._answers, []
        text = "".join(self._line(*answer) + "\n" for answer in answers)
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # the stream is closed (at exit) or broken: nothing to do
            pass


def access_log_for(settings: Settings, stream: TextIO | None = None) -> AccessLog | None:
    """The access log the settings ask for: None when ``CONNECTOR_PROXY_ACCESS_LOG`` is false or the
    level is above INFO."""
    if not settings.access_log or logging.getLevelName(settings.log_level) > logging.INFO:
        return None
    return AccessLog(stream if stream is not None else sys.stderr, json_lines=settings.log_format == "json")

"""Running a command: the one code path both the gRPC server and in-process calls go through."""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, NoReturn, Protocol

import grpc
from google.protobuf import message

from server import bulkheads, oauth
from server._registry import Command, Connector
from server.errors import (
    CommandError,
    Failure,
    Internal,
    InvalidParameters,
    default_error_code,
)

__all__ = [
    "Invoker",
    "LocalInvoker",
    "Reply",
    "ServerContext",
    "execute",
    "execute_within",
    "log",
    "redact",
    "timeout_failure",
]

logger = logging.getLogger(__name__)
_logs: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("spiff_logs", default=None)


def log(line: str) -> None:
    """Adds a line to the running command's ``spiff__logs``. Never pass a secret."""
    lines = _logs.get()
    if lines is None:
        logger.info("%s", line)
    else:
        lines.append(line)


@dataclass(frozen=True)
class Reply:
    """What a call of a command gave: a response or a failure, plus its log lines, and the token
    set the server refreshed for it (spiff-arena stores it in place of the one it sent)."""

    response: message.Message | None
    failure: Failure | None
    logs: tuple[str, ...] = ()
    refreshed: oauth.TokenRefresh | None = None


class Invoker(Protocol):
    """Calls commands by full gRPC method name; the REST shim's only view of execution."""

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply: ...


def timeout_failure(timeout: float) -> Failure:
    """The failure of a call that ran out of time, worded the same on both paths."""
    message_text = f"The command did not finish within {timeout:g} s."
    return Failure(
        grpc.StatusCode.DEADLINE_EXCEEDED, default_error_code(grpc.StatusCode.DEADLINE_EXCEEDED), message_text
    )


async def execute(
    command: Command, request: message.Message, context: Any, lines: list[str] | None = None
) -> Reply:
    """Applies defaults, checks required parameters, runs the command and catches what it raises.

    Synchronous (``def``) command methods run in a thread of their connector's pool
    (:mod:`server.bulkheads`), so blocking SDK calls never stall the event loop nor, when they
    hang, other connectors. Unknown exceptions are logged and become INTERNAL
    with a generic message: no traceback leaves the process. ``lines`` receives the
    command's log lines as they are written.
    """
    lines = [] if lines is None else lines
    token = _logs.set(lines)
    bulkhead = bulkheads.shared()[command.connector]
    bulkhead_token = bulkheads.using(bulkhead)
    secrets = command.plan.secret_values(request)
    tokens = oauth.CallTokens(command.tokens, request, context) if command.tokens else None
    tokens_token = oauth.using(tokens) if tokens is not None else None
    reply: Reply
    try:
        command.plan.apply_defaults(request)
        missing = command.plan.missing(request)
        if missing:
            names = ", ".join(v.field for v in missing)
            msg = f"Missing required parameters: {names}."
            raise InvalidParameters(msg, violations=missing)
        command.plan.check(request)  # the ranges, lengths and patterns the proto declares
        if tokens is not None:
            await tokens.prepare()  # OAuth token sets: checked, refreshed when expired
        if command.is_async:
            response = await command.behaviour(request, context)
        else:
            response = await bulkhead.run(command.behaviour, request, context)
        reply = Reply(response, None, refreshed=tokens.refreshed if tokens is not None else None)
    except CommandError as exc:
        reply = Reply(None, exc.to_failure())
    except _Aborted as exc:
        reply = Reply(None, Failure(exc.code, default_error_code(exc.code), exc.details))
    except Exception as exc:
        trace = "".join(traceback.format_exception(exc))
        seen = (*secrets, *(tokens.values if tokens is not None else ()))
        logger.error("command %s raised:\n%s", command.id, redact(trace, seen))
        reply = Reply(
            None, Internal("The command failed unexpectedly; the proxy's log has the details.").to_failure()
        )
    finally:
        bulkheads.reset(bulkhead_token)
        _logs.reset(token)
        if tokens_token is not None:
            oauth.reset(tokens_token)
    if tokens is not None:
        secrets = (*secrets, *tokens.values)
    if secrets:
        # A connector should never log or report a secret parameter; if one slips through, it
        # leaves the process masked.
        lines[:] = [redact(line, secrets) for line in lines]
        if reply.failure is not None:
            reply = replace(
                reply, failure=replace(reply.failure, message=redact(reply.failure.message, secrets))
            )
    logs = tuple(lines)
    if reply.failure is not None:
        return Reply(None, replace(reply.failure, logs=logs), logs)
    return replace(reply, logs=logs)


def redact(text: str, secrets: Sequence[str]) -> str:
    """``text`` with every secret value replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


async def execute_within(
    command: Command, request: message.Message, context: Any, timeout: float | None, *, margin: float = 0.0
) -> Reply:
    """:func:`execute` with a deadline: after ``timeout - margin`` seconds the command is cancelled
    and the call fails with DeadlineExceeded, keeping the lines the command logged so far
    (they tell what it was waiting for). ``None`` means no deadline."""
    lines: list[str] = []
    if timeout is None:
        return await execute(command, request, context, lines)
    try:
        async with asyncio.timeout(max(0.0, timeout - margin)):
            return await execute(command, request, context, lines)
    except TimeoutError:
        secrets = command.plan.secret_values(request)
        logs = tuple(redact(line, secrets) for line in lines)
        return Reply(None, replace(timeout_failure(timeout), logs=logs), logs)


class _Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _AbortsAsFailure:
    """``abort`` ends the command like a raised CommandError, on both paths.

    grpc.aio's own abort raises an exception of its own and finishes the RPC at once, which
    would bypass ``execute``: the failure would lose its ErrorInfo and the command's log lines.
    """

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Iterable[Any] = ()
    ) -> NoReturn:
        raise _Aborted(code, details)

    async def abort_with_status(self, status: grpc.Status) -> NoReturn:
        raise _Aborted(status.code, status.details)


class ServerContext(_AbortsAsFailure):
    """The grpc.aio servicer context as a command sees it: the real one, except for aborting."""

    def __init__(self, context: Any) -> None:
        self._context = context

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class LocalContext(_AbortsAsFailure):
    """The servicer context of an in-process call: the parts of grpc.aio.ServicerContext
    that connectors use, with the same meaning. Anything else fails loudly."""

    def __init__(self, deadline: float) -> None:
        self._deadline = deadline
        self._trailing: tuple[tuple[str, str | bytes], ...] = ()

    def time_remaining(self) -> float:
        return max(0.0, self._deadline - time.monotonic())

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return ()

    def peer(self) -> str:
        return "local"

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, str | bytes]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._trailing

    def __getattr__(self, name: str) -> NoReturn:
        msg = f"{name} is not available to commands called in-process"
        raise NotImplementedError(msg)


class LocalInvoker:
    """Calls hosted connectors directly through their servicers: no socket, no serialization."""

    def __init__(self, connectors: Iterable[Connector]) -> None:
        self.commands = {command.full_method: command for c in connectors for command in c.commands}

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        context = LocalContext(time.monotonic() + timeout)
        return await execute_within(self.commands[full_method], request, context, timeout)

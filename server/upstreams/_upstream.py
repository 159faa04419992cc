"""One upstream gRPC server: its channel, its schema kept current, its state, and calls to it.

The upstream is read by reflection at start, again whenever its ``grpc.health.v1`` status
turns back to SERVING (a Watch stream), and every ``discovery_interval`` seconds. While it cannot
be reached it keeps the services it last offered (diagrams keep their parameters) and its
calls answer ``ConnectorUnavailable`` at once; a loop reconnects with jittered backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import random
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf import descriptor, message, message_factory
from google.rpc import status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from server import correlation
from server.errors import Failure
from server.invocation import Reply, timeout_failure
from server.metrics import upstream_call, upstream_state
from server.oauth import TokenRefresh
from server.upstreams._channel import open_channel
from server.upstreams._config import UpstreamConfig
from server.upstreams._reflection import DiscoveryError, Schema, read_schema
from server.wire import LOG_METADATA_KEY, STATUS_DETAILS_KEY, TOKEN_REFRESH_KEY

__all__ = ["UNAVAILABLE_ERROR_CODE", "Upstream", "UpstreamState"]

logger = logging.getLogger(__name__)

UNAVAILABLE_ERROR_CODE = "ConnectorUnavailable"
_FIRST_RETRY = 0.2  # seconds before the first reconnection attempt; doubles up to _LAST_RETRY
_LAST_RETRY = 5.0
_DISCOVERY_TIMEOUT = 10.0
# When the watched server stops serving, another of the target's servers may still serve: asked
# with a few Checks at once (round robin hands consecutive picks to different servers, where
# Checks one after another could meet the same one every time, other calls picking in between),
# in a few rounds this far apart (the channel learns of a closed connection a moment later).
_ELSEWHERE_ROUNDS = 3
_ELSEWHERE_CHECKS = 4
_ELSEWHERE_PAUSE = 0.05
_CHECK_TIMEOUT = 1.0


class UpstreamState(enum.StrEnum):
    """``connecting`` until the first discovery, then ``ready`` or ``unavailable``."""

    CONNECTING = "connecting"
    READY = "ready"
    UNAVAILABLE = "unavailable"


def _serialize(request: message.Message) -> bytes:
    # Not bound to one class: a request built before a schema change still serializes.
    return request.SerializeToString()


def describe_rpc_error(exc: grpc.aio.AioRpcError) -> str:
    """A one-line reason, without the metadata (which may carry credentials)."""
    return f"{exc.code().name}: {exc.details() or 'no details'}"


class Upstream:
    """Keeps one server's schema current and calls its commands over one long-lived channel.

    ``on_schema`` is called (on the event loop) whenever the offered services change. The
    channel and the loop start in :meth:`start`, inside the event loop that will use them.
    """

    def __init__(
        self,
        config: UpstreamConfig,
        *,
        max_message_bytes: int = 64 * 1024 * 1024,
        keepalive: float = 300.0,
        discovery_interval: float = 60.0,
        on_schema: Callable[[Upstream], None] = lambda upstream: None,
    ) -> None:
        self.config = config
        self.on_schema = on_schema
        self._state = UpstreamState.CONNECTING
        upstream_state(self.name, self._state.value)
        self.services: tuple[descriptor.ServiceDescriptor, ...] = ()
        self.last_discovery: float | None = None  # seconds since the epoch
        self.last_error: str | None = None
        self._max_message_bytes = max_message_bytes
        self._keepalive = keepalive
        self._interval = discovery_interval
        self._fingerprint: str | None = None
        self._channel: grpc.aio.Channel | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._attempted = asyncio.Event()
        self._calls: dict[str, tuple[grpc.aio.UnaryUnaryMultiCallable[Any, Any], type[message.Message]]] = {}
        self._raw_calls: dict[str, grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]] = {}
        self._metadata = config.metadata or None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def state(self) -> UpstreamState:
        return self._state

    @state.setter
    def state(self, state: UpstreamState) -> None:
        if state is not self._state:
            self._state = state
            upstream_state(self.name, state.value)

    def __repr__(self) -> str:
        return f"<Upstream {self.name} {self.config.address} {self.state.value}>"

    async def start(self) -> None:
        """Opens the channel and starts following the server (returns at once)."""
        self._wake = asyncio.Event()
        self._attempted = asyncio.Event()
        self._channel = open_channel(
            self.config, max_message_bytes=self._max_message_bytes, keepalive=self._keepalive
        )
        self._task = asyncio.create_task(self._run(), name=f"upstream {self.name}")

    async def first_attempt(self, timeout: float) -> None:
        """Waits until the first discovery succeeded or failed, at most ``timeout`` seconds."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._attempted.wait(), timeout)

    async def close(self, grace: float | None = None) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._channel is not None:
            await self._channel.close(grace)
            self._channel = None
            # grpc.aio's poller thread hands the cancelled streams' last events to the loop a
            # moment after close; were the loop closed by then, each would raise in that thread.
            await asyncio.sleep(0.05)

    # -- following the server -------------------------------------------------------------

    async def _run(self) -> None:
        delay = _FIRST_RETRY
        while True:
            try:
                await self._discover()
                delay = _FIRST_RETRY
                self._attempted.set()
                await self._follow()
            except grpc.aio.AioRpcError as exc:
                self._lost(describe_rpc_error(exc))
            except DiscoveryError as exc:
                self._lost(str(exc))
            except Exception as exc:  # a bug must not end the loop: log it and go on
                logger.exception("upstream %s: unexpected failure", self.name)
                self._lost(f"unexpected failure: {exc}")
            self._attempted.set()
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))  # noqa: S311 - jitter, not a secret
            delay = min(delay * 2, _LAST_RETRY)

    async def _discover(self) -> None:
        assert self._channel is not None  # noqa: S101 - set by start()
        schema = await read_schema(self._channel, metadata=self.config.metadata, timeout=_DISCOVERY_TIMEOUT)
        self.last_discovery = time.time()
        changed = schema.fingerprint != self._fingerprint
        if changed:
            self._use(schema)
        if self.state is not UpstreamState.READY:
            logger.info(
                "upstream %s (%s) is ready: %d services", self.name, self.config.address, len(self.services)
            )
        self.state = UpstreamState.READY
        self.last_error = None
        if changed:
            self.on_schema(self)

    def _use(self, schema: Schema) -> None:
        services = schema.services()
        assert self._channel is not None  # noqa: S101 - set by start()
        calls: dict[str, tuple[grpc.aio.UnaryUnaryMultiCallable[Any, Any], type[message.Message]]] = {}
        for service in services:
            for method in service.methods:
                if method.client_streaming or method.server_streaming:
                    continue
                full_method = f"/{service.full_name}/{method.name}"
                response_class = message_factory.GetMessageClass(method.output_type)
                multicallable = self._channel.unary_unary(
                    full_method,
                    request_serializer=_serialize,
                    response_deserializer=response_class.FromString,
                )
                calls[full_method] = (multicallable, response_class)
        self.services = tuple(services)
        self._calls = calls
        self._raw_calls = {}
        self._fingerprint = schema.fingerprint

    async def _follow(self) -> None:
        """Returns never; raises when the server goes away. Rediscovers when woken (its health
        turned SERVING again) and every discovery interval. When the watched server stops
        serving but the target still serves (another of its servers), follows it there."""
        while True:
            reason = await self._follow_watch()
            if not await self._served_elsewhere():
                raise DiscoveryError(reason)
            logger.info("upstream %s: %s; the target still serves, following it there", self.name, reason)
            # Another of its servers, or the same one restarted, maybe with another schema.
            await self._discover()

    async def _follow_watch(self) -> str:
        """Follows one health Watch; returns why it stopped following it (the stream ended or
        failed, or its server stopped serving). A failed rediscovery raises."""
        assert self._channel is not None  # noqa: S101 - set by start()
        watch = health_pb2_grpc.HealthStub(self._channel).Watch(
            health_pb2.HealthCheckRequest(service=""), metadata=self._metadata
        )
        reader: asyncio.Future[str] = asyncio.ensure_future(self._statuses(watch))
        woken: asyncio.Future[Any] = reader
        try:
            while True:
                self._wake.clear()
                woken = asyncio.ensure_future(self._wake.wait())
                done, _ = await asyncio.wait(
                    {reader, woken}, timeout=self._interval, return_when=asyncio.FIRST_COMPLETED
                )
                woken.cancel()
                if reader in done:
                    try:
                        return reader.result()
                    except grpc.aio.AioRpcError as exc:
                        return describe_rpc_error(exc)
                await self._discover()
        finally:
            watch.cancel()
            for task in {reader, woken}:
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, grpc.aio.AioRpcError):
                        await task
                elif not task.cancelled():
                    # Ended too (the stream failed while a rediscovery did): the error being
                    # raised is the one that counts; this one is read so it is not reported unread.
                    task.exception()

    async def _statuses(self, watch: Any) -> str:
        """Reads one Watch: SERVING wakes a rediscovery when the upstream was down; another status
        marks it down, unless another of the target's servers serves (then returns, to watch that
        one). Returns when the stream ends."""
        try:
            async for response in watch:
                if response.status == health_pb2.HealthCheckResponse.SERVING:
                    if self.state is not UpstreamState.READY:
                        self._wake.set()
                    continue
                status = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
                if self.state is UpstreamState.READY and await self._served_elsewhere():
                    return f"one of its servers is {status}"
                self._lost(f"its health status is {status}")
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
                raise
            # No health service: periodic discovery and failed calls notice an outage instead.
            logger.info("upstream %s offers no health Watch; it is polled instead", self.name)
            await asyncio.Event().wait()
        return "the server ended its health watch"

    async def _served_elsewhere(self) -> bool:
        """Whether a health Check through the channel, which routes each call to one of the
        target's connected servers, answers SERVING from any of them."""
        for round_ in range(_ELSEWHERE_ROUNDS):
            if round_:
                await asyncio.sleep(_ELSEWHERE_PAUSE)
            if any(await asyncio.gather(*(self._serving() for _ in range(_ELSEWHERE_CHECKS)))):
                return True
        return False

    async def _serving(self) -> bool:
        assert self._channel is not None  # noqa: S101 - set by start()
        try:
            answer = await health_pb2_grpc.HealthStub(self._channel).Check(
                health_pb2.HealthCheckRequest(service=""), metadata=self._metadata, timeout=_CHECK_TIMEOUT
            )
        except grpc.aio.AioRpcError:
            return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)

    def _lost(self, reason: str) -> None:
        if self.state is not UpstreamState.UNAVAILABLE or reason != self.last_error:
            logger.warning("upstream %s (%s) is unavailable: %s", self.name, self.config.address, reason)
        self.state = UpstreamState.UNAVAILABLE
        self.last_error = reason

    # -- calls ----------------------------------------------------------------------------

    def unavailable(self, logs: tuple[str, ...] = ()) -> Failure:
        """The failure of a call while the server cannot be reached (503 over REST)."""
        reason = f": {self.last_error}" if self.last_error else ""
        message_text = f"The connector server {self.name} ({self.config.address}) is not available{reason}."
        return Failure(grpc.StatusCode.UNAVAILABLE, UNAVAILABLE_ERROR_CODE, message_text, logs=logs)

    def transport_failed(self, exc: grpc.aio.AioRpcError) -> bool:
        """Whether a call's error came from the connection, not the command (a command's
        failure carries status details); if so, the upstream is marked unavailable."""
        if exc.code() != grpc.StatusCode.UNAVAILABLE:
            return False
        if any(key == STATUS_DETAILS_KEY for key, _ in exc.trailing_metadata() or ()):
            return False
        self._lost(describe_rpc_error(exc))
        self._wake.set()
        return True

    async def invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        """Calls a command with the deadline ``timeout``; never raises for the command's or the
        connection's failures, which come back as the reply's failure."""
        reply = await self._invoke(full_method, request, timeout)
        upstream_call(self.name, reply.failure.code if reply.failure is not None else grpc.StatusCode.OK)
        return reply

    async def _invoke(self, full_method: str, request: message.Message, timeout: float) -> Reply:
        if self.state is not UpstreamState.READY:
            return Reply(None, self.unavailable())
        entry = self._calls.get(full_method)
        if entry is None:  # a streaming rpc: not a command
            message_text = f"{full_method} on {self.name} is not a unary rpc, so not a command."
            return Reply(None, Failure(grpc.StatusCode.UNIMPLEMENTED, "Unimplemented", message_text))
        multicallable, response_class = entry
        metadata = self._metadata
        request_id = correlation.request_id()
        if request_id is not None:
            metadata = (*(metadata or ()), (correlation.REQUEST_ID_HEADER, request_id))
        call = multicallable(request, timeout=timeout, metadata=metadata)
        try:
            response = await call
        except grpc.aio.AioRpcError as exc:
            trailing = exc.trailing_metadata() or ()
            logs = logs_of(trailing)
            if self.transport_failed(exc):
                return Reply(None, self.unavailable(logs), logs)
            status = next(
                (
                    status_pb2.Status.FromString(v)
                    for k, v in trailing
                    if k == STATUS_DETAILS_KEY and isinstance(v, bytes)
                ),
                None,
            )
            if status is None and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Reply(None, timeout_failure(timeout), logs)
            failure = Failure.from_status(exc.code(), exc.details() or "", status, response_class, logs)
            return Reply(None, failure, logs)
        trailing = await call.trailing_metadata() or ()
        return Reply(response, None, logs_of(trailing), refreshed=token_refresh_of(trailing))

    def raw(self, full_method: str) -> grpc.aio.UnaryUnaryMultiCallable[bytes, bytes]:
        """A multicallable passing serialized messages through (for the gRPC front)."""
        raw = self._raw_calls.get(full_method)
        if raw is None:
            assert self._channel is not None  # noqa: S101 - set by start()
            raw = self._channel.unary_unary(full_method)
            self._raw_calls[full_method] = raw
        return raw

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return self.config.metadata


def logs_of(metadata: Iterable[tuple[str, str | bytes]]) -> tuple[str, ...]:
    """The ``spiff__logs`` lines a server sent in its trailing metadata."""
    return tuple(
        v.decode(errors="replace") if isinstance(v, bytes) else v
        for k, v in metadata
        if k == LOG_METADATA_KEY
    )


def token_refresh_of(metadata: Iterable[tuple[str, str | bytes]]) -> TokenRefresh | None:
    """The token set a server refreshed during the call, from its trailing metadata."""
    for key, value in metadata:
        if key == TOKEN_REFRESH_KEY and isinstance(value, bytes):
            try:
                return TokenRefresh.from_json(value)
            except (ValueError, KeyError, TypeError):
                logger.warning("ignored a malformed %s trailer", TOKEN_REFRESH_KEY)
    return None

"""One target, several servers of the same connectors (a DNS name with several records, such as a
Kubernetes headless Service; here gRPC's ``ipv4:a,b`` target, which the comma-separated setting
cannot spell): calls go round robin over them; one of them draining, then stopping, fails no call
made while it drains or after it stopped, and leaves the upstream ready."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import message_factory

from server.app import create_server
from server.health import Health
from server.invocation import Reply
from server.upstreams import Federation, Upstream, UpstreamConfig, UpstreamState
from tests.conftest import until
from tests.federation.test_federation import by_name
from tests.ports import free_port

pytestmark = pytest.mark.anyio

EXAMPLE = "/spiff.connector.example.v1.ExampleService/Example"


def established_to(port: int) -> int:
    """This machine's established TCP connections to 127.0.0.1:``port`` (their clients' ends),
    over IPv4 or as IPv4-mapped IPv6 (gRPC's sockets)."""
    remotes = {f"0100007F:{port:04X}", f"0000000000000000FFFF00000100007F:{port:04X}"}
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and fields[2] in remotes:  # 01: ESTABLISHED
                count += 1
    return count


async def example(federation: Federation, message: str) -> Reply:
    (upstream,) = federation.upstreams
    service = next(s for s in upstream.services if s.name == "ExampleService")
    request = message_factory.GetMessageClass(service.methods_by_name["Example"].input_type)(message=message)
    return await federation.invoke(EXAMPLE, request, 5.0)


async def test_one_server_of_a_target_drains_and_stops_and_no_call_fails(connectors, caplog):
    caplog.set_level(logging.INFO, "server.upstreams")
    example_only = by_name(connectors, "example")
    port_a, port_b = free_port(), free_port()
    health_a, health_b = Health(), Health()
    # A alone at first, so the upstream's health watch is on A when A drains.
    server_a, _ = await create_server(example_only, f"127.0.0.1:{port_a}", health=health_a)
    target = f"ipv4:127.0.0.1:{port_a},127.0.0.1:{port_b}"
    federation = Federation([], [Upstream(UpstreamConfig(name="replicas", target=target))])
    await federation.start()
    server_b: grpc.aio.Server | None = None
    try:
        (upstream,) = federation.upstreams
        assert upstream.state is UpstreamState.READY, upstream.last_error
        server_b, _ = await create_server(example_only, f"127.0.0.1:{port_b}", health=health_b)
        await until(lambda: established_to(port_b) >= 1, 10)  # the channel reconnects to B

        # Round robin: calls reach both servers (pick-first would keep one connection).
        replies = await asyncio.gather(*(example(federation, f"call {n}") for n in range(20)))
        assert [r.failure for r in replies] == [None] * 20
        assert established_to(port_a) >= 1
        assert established_to(port_b) >= 1

        # A drains and stops, as a replaced pod does.
        failures: list[str] = []
        states: set[UpstreamState] = set()
        stop_calling = asyncio.Event()

        async def keep_calling() -> int:
            calls = 0
            while not stop_calling.is_set():
                reply = await example(federation, "during the drain")
                states.add(upstream.state)
                if reply.failure is not None:
                    failures.append(reply.failure.message)
                calls += 1
                await asyncio.sleep(0.005)
            return calls

        async def calls_meanwhile(seconds: float) -> int:
            stop_calling.clear()
            callers = [asyncio.create_task(keep_calling()) for _ in range(4)]
            await asyncio.sleep(seconds)
            stop_calling.set()
            return sum(await asyncio.gather(*callers))

        # A drains (NOT_SERVING; its health watch ends) and still serves meanwhile.
        await health_a.drain()
        assert await calls_meanwhile(0.5) > 40
        # A stops, gracefully (calls sent at that very instant are not part of this: the server
        # may cancel a call it accepted as it stopped), and the calls go on, to B.
        await server_a.stop(0.5)
        calls = await calls_meanwhile(0.5)
        assert calls > 40
        assert failures == []
        assert states == {UpstreamState.READY}
        assert upstream.state is UpstreamState.READY
        assert "the target still serves" in caplog.text

        # B, the last server, stopping is an outage as before.
        await server_b.stop(None)
        await until(lambda: upstream.state is UpstreamState.UNAVAILABLE, 5)
        started = time.monotonic()
        reply = await example(federation, "nobody left")
        assert time.monotonic() - started < 0.1
        assert reply.failure is not None
        assert reply.failure.error_code == "ConnectorUnavailable"
    finally:
        await federation.close(None)
        await server_a.stop(None)
        if server_b is not None:
            await server_b.stop(None)

"""Bulkheads: each connector's blocking work in a bounded pool of its own, refused at once when full."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import grpc
import pytest

from server import bulkheads, errors
from server.bulkheads import Bulkhead, Bulkheads, run_blocking

pytestmark = pytest.mark.anyio

_marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


class Gate:
    """Blocking work that waits until the test opens the gate; counts who entered."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Semaphore(0)
        self.threads: list[str] = []

    def wait(self) -> str:
        self.threads.append(threading.current_thread().name)
        self.entered.release()
        assert self.opened.wait(10), "the test never opened the gate"
        return "done"

    async def until_entered(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.entered.acquire, True, 5), "the work never started"


async def test_work_runs_in_the_connectors_own_threads_with_the_callers_context():
    bulkhead = Bulkhead("aws", 2)
    _marker.set("from the caller")
    try:
        name, seen = await bulkhead.run(lambda: (threading.current_thread().name, _marker.get()))
    finally:
        bulkhead.shutdown()
    assert name.startswith("aws")
    assert seen == "from the caller"
    assert bulkhead.busy == 0


async def test_a_full_pool_refuses_at_once_without_starting_anything():
    bulkhead = Bulkhead("aws", 2)
    gate = Gate()
    running = [asyncio.create_task(bulkhead.run(gate.wait)) for _ in range(2)]
    await gate.until_entered(2)
    started = asyncio.get_running_loop().time()
    with pytest.raises(errors.ConnectorBusy) as refused:
        await bulkhead.run(gate.wait)
    assert asyncio.get_running_loop().time() - started < 0.1
    assert (refused.value.code, refused.value.error_code) == (grpc.StatusCode.UNAVAILABLE, "ConnectorBusy")
    assert refused.value.retry_after == 1.0
    assert "all 2 of its threads" in refused.value.message
    gate.opened.set()
    assert await asyncio.gather(*running) == ["done", "done"]
    assert len(gate.threads) == 2  # the refused call never ran
    assert bulkhead.busy == 0
    assert await bulkhead.run(lambda: 42) == 42
    bulkhead.shutdown()


async def test_a_thread_past_its_deadline_stays_counted_until_its_work_ends():
    bulkhead = Bulkhead("smtp", 1)
    gate = Gate()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await bulkhead.run(gate.wait)
    # The caller gave up; the thread did not.
    assert bulkhead.busy == 1
    with pytest.raises(errors.ConnectorBusy):
        await bulkhead.run(lambda: None)
    gate.opened.set()
    for _ in range(100):
        if bulkhead.busy == 0:
            break
        await asyncio.sleep(0.01)
    assert bulkhead.busy == 0
    assert await bulkhead.run(lambda: "free again") == "free again"
    bulkhead.shutdown()


async def test_an_exception_frees_the_thread_and_reaches_the_caller():
    bulkhead = Bulkhead("http", 1)

    def fail() -> None:
        msg = "boom"
        raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="boom"):
        await bulkhead.run(fail)
    assert bulkhead.busy == 0
    bulkhead.shutdown()


async def test_pools_are_separate_and_sized_per_connector():
    pools = Bulkheads(3, {"aws": 1})
    gate = Gate()
    hung = asyncio.create_task(pools["aws"].run(gate.wait))
    await gate.until_entered(1)
    with pytest.raises(errors.ConnectorBusy):
        await pools["aws"].run(lambda: None)
    # Another connector's pool is untouched by the hung one.
    assert await pools["smtp"].run(lambda: "smtp ran") == "smtp ran"
    assert (pools["aws"].size, pools["smtp"].size) == (1, 3)
    assert pools["aws"] is pools["aws"]
    gate.opened.set()
    await hung
    pools.shutdown()


async def test_run_blocking_uses_the_running_commands_pool_and_the_default_pool_outside_one():
    bulkhead = Bulkhead("typeahead", 1)
    token = bulkheads.using(bulkhead)
    try:
        inside = await run_blocking(lambda: threading.current_thread().name)
    finally:
        bulkheads.reset(token)
    outside = await run_blocking(lambda: threading.current_thread().name)
    bulkhead.shutdown()
    assert inside.startswith("typeahead")
    assert not outside.startswith("typeahead")


def test_a_bulkhead_needs_a_thread():
    with pytest.raises(ValueError, match="at least one thread"):
        Bulkhead("aws", 0)

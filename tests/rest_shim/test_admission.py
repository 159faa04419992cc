"""Admission control: beyond the calls in flight or the body bytes a process may hold, a call is
refused at once with 503 ``ProxyBusy`` and ``Retry-After``, on REST and on the gRPC port alike."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import pytest

from connector_proxy._processes import admission_for
from server import bulkheads
from server._registry import Connector
from server.admission import Admission
from server.app import create_server
from server.metrics import exposition, watch_admission
from server.settings import Settings
from tests.busy import one_call_at_a_time
from tests.conftest import AppFactory, client_for, until

pytestmark = pytest.mark.anyio


def nap(seconds: float, padding: int = 0) -> dict[str, object]:
    """rich/Nap: a call that holds its place for ``seconds`` on the event loop."""
    body: dict[str, object] = {"seconds": seconds}
    if padding:
        body["padding"] = "x" * padding  # no such parameter: ignored, but its bytes are held
    return body


def scrape() -> str:
    return exposition(None)[0].decode()


def assert_busy(response, limit_words: str) -> None:
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    payload = response.json()
    assert payload["error"]["error_code"] == "ProxyBusy"
    assert limit_words in payload["error"]["message"]
    assert payload["command_response"]["http_status"] == 503
    assert payload["command_response_version"] == 2


async def test_calls_beyond_the_limit_are_refused_at_once_then_admitted_again(make_rich_app: AppFactory):
    admission = Admission(max_calls=2, max_bytes=1 << 20)
    async with client_for(make_rich_app(admission=admission)) as client:
        held = [asyncio.create_task(client.post("/v1/do/rich/Nap", json=nap(1))) for _ in range(2)]
        await until(lambda: admission.calls == 2, 5)
        watch_admission(admission)
        assert "spiff_connector_proxy_calls_in_flight 2.0" in scrape()
        started = asyncio.get_running_loop().time()
        refused = await client.post("/v1/do/rich/Echo", json={"name": "hi"})
        assert asyncio.get_running_loop().time() - started < 0.5
        assert_busy(refused, "2 calls in flight")
        assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]
        again = await client.post("/v1/do/rich/Echo", json={"name": "hi"})
        assert again.status_code == 200
    assert (admission.calls, admission.bytes) == (0, 0)


async def test_bodies_are_held_against_the_byte_limit(make_rich_app: AppFactory):
    admission = Admission(max_calls=100, max_bytes=1000)
    async with client_for(make_rich_app(admission=admission)) as client:
        held = asyncio.create_task(client.post("/v1/do/rich/Nap", json=nap(1, padding=600)))
        await until(lambda: admission.bytes >= 600, 5)
        assert_busy(
            await client.post("/v1/do/rich/Echo", json={"name": "x" * 600}),
            "1000 bytes of request bodies",
        )
        small = await client.post("/v1/do/rich/Echo", json={"name": "small"})
        assert small.status_code == 200
        assert (await held).status_code == 200
    assert (admission.calls, admission.bytes) == (0, 0)


async def test_a_body_without_length_is_counted_as_it_arrives(make_rich_app: AppFactory):
    admission = Admission(max_calls=100, max_bytes=1000)

    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(3):
            yield b"y" * 500
        yield b'"}'

    async with client_for(make_rich_app(admission=admission)) as client:
        response = await client.post("/v1/do/rich/Echo", content=chunks())
        assert_busy(response, "1000 bytes of request bodies")

        async def small() -> AsyncIterator[bytes]:
            yield b'{"name": '
            yield b'"fits"}'

        fits = await client.post("/v1/do/rich/Echo", content=small())
        assert fits.status_code == 200
        assert fits.json()["command_response"]["body"]["request"]["name"] == "fits"
    assert (admission.calls, admission.bytes) == (0, 0)


async def test_bad_requests_release_what_they_held(make_rich_app: AppFactory):
    admission = Admission(max_calls=1, max_bytes=1 << 20)
    async with client_for(make_rich_app(admission=admission)) as client:
        for body, status in ((b"{not json", 400), (b'{"seconds": "soon"}', 400), (b"[1]", 400)):
            response = await client.post("/v1/do/rich/Nap", content=body)
            assert response.status_code == status
        assert (await client.post("/v1/do/rich/Echo", json={"name": "hi"})).status_code == 200
    assert (admission.calls, admission.bytes) == (0, 0)


async def test_the_grpc_port_refuses_with_retry_info(connectors: list[Connector]):
    admission = Admission(max_calls=1, max_bytes=1 << 20)
    server, port = await create_server(connectors, "127.0.0.1:0", admission=admission)
    try:
        await one_call_at_a_time(port, admission)
    finally:
        await server.stop(None)
    assert (admission.calls, admission.bytes) == (0, 0)


def test_the_settings_hold_together():
    with pytest.raises(ValueError, match="must be at least CONNECTOR_PROXY_MAX_BODY_BYTES"):
        Settings.from_env(
            {"CONNECTOR_PROXY_MAX_BODY_BYTES": "2000", "CONNECTOR_PROXY_MAX_BODY_BYTES_IN_FLIGHT": "1000"}
        )
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_MAX_IN_FLIGHT": "7",
            "CONNECTOR_PROXY_CONNECTOR_THREADS": "3",
            "CONNECTOR_PROXY_CONNECTOR_THREADS_AWS": "5",
        }
    )
    assert (settings.max_in_flight, settings.connector_threads) == (7, 3)
    assert settings.connector_thread_sizes == (("AWS", 5),)
    with pytest.raises(ValueError, match="between 1 and 1024"):
        Settings.from_env({"CONNECTOR_PROXY_CONNECTOR_THREADS_AWS": "0"})


async def test_pool_sizes_by_connector_name_and_typos_stop_start_up(connectors: list[Connector]):
    settings = Settings.from_env(
        {"CONNECTOR_PROXY_CONNECTOR_THREADS": "3", "CONNECTOR_PROXY_CONNECTOR_THREADS_POSTGRES_V2": "5"}
    )
    admission = admission_for(settings, connectors)
    try:
        assert admission.max_calls == Settings.max_in_flight
        assert bulkheads.shared()["postgres_v2"].size == 5
        assert bulkheads.shared()["aws"].size == 3
    finally:
        bulkheads.configure(bulkheads.DEFAULT_THREADS, {})
    typo = Settings.from_env({"CONNECTOR_PROXY_CONNECTOR_THREADS_AWZ": "5"})
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_CONNECTOR_THREADS_AWZ: no hosted connector"):
        admission_for(typo, connectors)


@pytest.fixture
def one_rich_thread() -> Iterator[None]:
    bulkheads.configure(bulkheads.DEFAULT_THREADS, {"rich": 1})
    try:
        yield
    finally:
        bulkheads.configure(bulkheads.DEFAULT_THREADS, {})


async def test_a_full_connector_pool_answers_503_connector_busy_through_the_shim(
    make_rich_app: AppFactory, one_rich_thread: None
):
    async with client_for(make_rich_app(command_timeout=0.5)) as client:
        hung = asyncio.create_task(client.post("/v1/do/rich/Sleep", json={"seconds": 1.5}))
        await until(lambda: bulkheads.shared()["rich"].busy == 1, 5)
        assert 'spiff_connector_proxy_connector_threads_busy{connector="rich"} 1.0' in scrape()
        assert 'spiff_connector_proxy_connector_threads{connector="rich"} 1.0' in scrape()
        busy = await client.post("/v1/do/rich/Sleep", json={"seconds": 0})
        assert busy.status_code == 503
        assert busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["error_code"] == "ConnectorBusy"
        # Work that needs no thread of the pool is not held up by it.
        assert (await client.post("/v1/do/rich/Echo", json={"name": "hi"})).status_code == 200
        timed_out = await hung
        assert (timed_out.status_code, timed_out.json()["error"]["error_code"]) == (504, "DeadlineExceeded")
        # Answered, but its thread still sleeps: the pool is still full until it wakes.
        still_busy = await client.post("/v1/do/rich/Sleep", json={"seconds": 0})
        assert still_busy.json()["error"]["error_code"] == "ConnectorBusy"
        await until(lambda: bulkheads.shared()["rich"].busy == 0, 5)
        assert (await client.post("/v1/do/rich/Sleep", json={"seconds": 0})).status_code == 200

"""A slow dependency against a real proxy process: it fills its own connector's pool and no other.

The scenario: eight ``aws/GetFileData`` calls against an S3 endpoint that accepts connections and
never answers. Before bulkheads, an ``smtp/SendEmail`` to a closed port (normally answered in a
fraction of a second) waited 40 s behind them and failed with 504, because blocking commands and
every other helper shared one small thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.ports import free_port
from tests.processes import process, stop, wait_for_http

pytestmark = pytest.mark.anyio

AWS_THREADS = 4
COMMAND_TIMEOUT = 4.0


class Blackhole:
    """A TCP server that accepts every connection and never says a word."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self._listener.accept()
                self.accepted.append(conn)

    def close(self) -> None:
        self._listener.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def blackhole() -> Iterator[Blackhole]:
    hole = Blackhole()
    try:
        yield hole
    finally:
        hole.close()


@pytest.fixture
def proxy_url(tmp_path: pathlib.Path, blackhole: Blackhole) -> Iterator[str]:
    port = free_port()
    env = {
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(free_port()),
        "CONNECTOR_PROXY_COMMAND_TIMEOUT": str(COMMAND_TIMEOUT),
        "CONNECTOR_PROXY_CONNECTOR_THREADS_AWS": str(AWS_THREADS),
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{blackhole.port}",
        "AWS_ACCESS_KEY_ID": "AKIDTEST",
        "AWS_SECRET_ACCESS_KEY": "test-secret",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials"),
    }
    log = tmp_path / "proxy.log"
    url = f"http://127.0.0.1:{port}"
    with process(["-m", "connector_proxy"], env, log) as proc:
        wait_for_http(url, proc, log)
        yield url
        stop(proc, log)


async def timed(
    client: httpx.AsyncClient, command: str, body: dict[str, Any]
) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    response = await client.post(f"/v1/do/{command}", json=body)
    return time.monotonic() - started, response


def error_code(response: httpx.Response) -> str | None:
    error = response.json()["error"]
    return None if error is None else str(error["error_code"])


async def test_a_hung_dependency_fills_its_own_pool_and_no_other(proxy_url: str, blackhole: Blackhole):
    get_file = {"bucket": "reports", "object_name": "q3.pdf"}
    email = {
        "smtp_host": "127.0.0.1",
        "smtp_port": free_port(),  # closed: refused at once
        "email_subject": "hi",
        "email_body": "hi",
        "email_to": "a@example.com",
        "email_from": "b@example.com",
    }
    async with httpx.AsyncClient(base_url=proxy_url, timeout=60) as client:
        usual, refused_smtp = await timed(client, "smtp/SendEmail", email)
        usual_answer = (refused_smtp.status_code, error_code(refused_smtp))

        calls = [asyncio.create_task(timed(client, "aws/GetFileData", get_file)) for _ in range(8)]
        for _ in range(200):  # every thread of the aws pool is stuck in the endpoint
            if len(blackhole.accepted) >= AWS_THREADS:
                break
            await asyncio.sleep(0.02)
        assert len(blackhole.accepted) >= AWS_THREADS

        # An unrelated connector answers as it always does, in its usual time.
        took, smtp = await timed(client, "smtp/SendEmail", email)
        assert (smtp.status_code, error_code(smtp)) == usual_answer
        assert took < max(1.0, 5 * usual), (took, usual)
        # The aws connector itself says it is busy, at once.
        took, busy = await timed(client, "aws/GetFileData", get_file)
        assert (busy.status_code, error_code(busy)) == (503, "ConnectorBusy")
        assert busy.headers["retry-after"] == "1"
        assert took < 1.0

        answers = await asyncio.gather(*calls)
        refused = [(t, r) for t, r in answers if error_code(r) == "ConnectorBusy"]
        hung = [(t, r) for t, r in answers if error_code(r) != "ConnectorBusy"]
        assert len(refused) == 8 - AWS_THREADS
        assert all(t < 1.0 and r.status_code == 503 for t, r in refused)
        # The calls that got a thread end with the command's deadline, not botocore's 60 s.
        assert len(hung) == AWS_THREADS
        for took, response in hung:
            assert response.status_code == 504, response.json()
            assert took < COMMAND_TIMEOUT + 1.0

        # The SDK's own timeouts fit inside the deadline: the threads are free again shortly
        # after, so the next call gets one (and waits on the silent endpoint) instead of 503.
        await asyncio.sleep(1.0)
        took, again = await timed(client, "aws/GetFileData", get_file)
        assert error_code(again) != "ConnectorBusy", again.json()
        assert again.status_code == 504

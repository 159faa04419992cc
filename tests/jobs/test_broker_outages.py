"""The broker mode when Redis goes away: a Redis server of the test's own (append-only file on,
as the README recommends) is stopped while a job runs and started again on the same port. The
proxy answers 503 ``JobsUnavailable`` meanwhile and accepts nothing; the worker waits Redis out
with the job's message unacknowledged, then finishes the job and calls back once."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import redis

from tests.jobs.conftest import callbacks, job_in, running, spiff_body
from tests.ports import free_port

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="no redis-server"),
]


class PrivateRedis:
    """``redis-server`` on a free loopback port, its data in ``directory`` (AOF, fsync always)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                if client.ping():
                    client.close()
                    return
            except redis.ConnectionError:
                assert self.process.poll() is None, "redis-server exited"
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend() -> str:
    return "broker"


async def test_a_redis_outage_mid_job_answers_503_and_loses_nothing(
    make_app, make_jobs, spiff, private_redis
):
    jobs = make_jobs(redis_url=private_redis.url)
    async with running(make_app(jobs=jobs)) as client:
        response = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=2, message="waited out"))
        assert response.status_code == 202, response.text
        job_id = response.json()["command_response"]["body"]["job_id"]
        await job_in(client, job_id, "running")

        private_redis.stop()
        during = await client.get(f"/v1/jobs/{job_id}")
        assert during.status_code == 503
        assert during.json()["error"]["error_code"] == "JobsUnavailable"
        refused = await client.post(
            "/v1/do/example/Delay", json=spiff_body("another-task", seconds=0, message="refused")
        )
        assert refused.status_code == 503
        assert refused.json()["error"]["error_code"] == "JobsUnavailable"
        assert "Redis" in refused.json()["error"]["message"]
        await anyio.sleep(2.5)  # the command has finished; its worker is retrying Redis
        assert spiff.calls == []

        private_redis.start()
        (call,) = await callbacks(spiff, 1, timeout=30)
        assert call.json()["command_response"]["body"] == {"message": "waited out", "waited_seconds": 2}
        job = await job_in(client, job_id, "delivered", timeout=15)
        assert (job["attempts"], job["delivery_attempts"]) == (1, 1)
        listed = (await client.get("/v1/jobs")).json()
        assert [j["id"] for j in listed["jobs"]] == [job_id]  # the refused call left nothing
    assert len(spiff.calls) == 1


async def test_readiness_follows_redis(make_app, make_jobs, private_redis):
    jobs = make_jobs(redis_url=private_redis.url)
    async with running(make_app(jobs=jobs)) as client:
        assert (await client.get("/readiness")).status_code == 200
        private_redis.stop()
        started = time.monotonic()
        response = await client.get("/readiness")
        assert time.monotonic() - started < 2.5  # within the check's own timeout
        assert response.status_code == 503
        (problem,) = response.json()["problems"]
        assert problem.startswith("Redis ")
        assert "redis://" not in response.text  # the URL may carry a password
        private_redis.start()
        deadline = time.monotonic() + 15
        while (await client.get("/readiness")).status_code != 200:
            assert time.monotonic() < deadline, "still not ready after Redis came back"
            await anyio.sleep(0.2)

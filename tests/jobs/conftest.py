"""Long-running commands: a fake spiff-arena backend, and the shim with a job backend.

``jobs_proxy`` runs each test on both paths (in-process and over gRPC), like ``proxy``, and with
both backends: ``embedded`` (SQLite, workers in the process) and ``broker`` (RabbitMQ and Redis,
a taskiq worker in the test process); the app's lifespan runs, so the workers are live and call
back the fake backend.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette

from jobs import CallbackDelivery, EmbeddedJobs, JobBackend
from tests.conftest import AppFactory, client_for
from tests.jobs.broker import InProcessBroker
from tests.jobs.fake_spiff import FakeSpiff

CALLBACK_KEY = "cb-key-7f3a9c1e-never-logged"
TASK_ID = "88f9b549-53a1-4c16-9f43-0b3c2a7d1e01"
SPIFF_BACKEND = "http://localhost:7000"  # what spiff-arena puts in callback URLs by default

JobsFactory = Callable[..., JobBackend]


def callback_url(task_id: str = TASK_ID, base: str = SPIFF_BACKEND) -> str:
    return f"{base}/v1.0/tasks/42/{task_id}/callback"


def spiff_body(task_id: str = TASK_ID, **params: Any) -> dict[str, Any]:
    """A /v1/do body as spiff-arena sends it (§2.3)."""
    return {
        **params,
        "spiff__process_instance_id": 42,
        "spiff__process_model_identifier": "tests/jobs",
        "spiff__task_id": task_id,
        "spiff__task_data": {"x": 1},
        "spiff__callback_url": callback_url(task_id),
    }


@pytest.fixture
def spiff() -> Iterator[FakeSpiff]:
    with FakeSpiff() as fake:
        yield fake


@pytest.fixture
def jobs_db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.sqlite3"


@pytest.fixture(params=["embedded", "broker"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_jobs(backend: str, jobs_db: Path, spiff: FakeSpiff) -> JobsFactory:
    """A backend calling back ``spiff`` with fast retries: embedded (on ``jobs_db``) or broker.

    ``delivery={...}`` overrides CallbackDelivery's arguments; ``workers``, ``job_timeout`` and
    ``run_attempts`` apply to both backends.
    """

    def factory(*, delivery: dict[str, Any] | None = None, **kwargs: Any) -> JobBackend:
        options: dict[str, Any] = {
            "base_url": spiff.url,
            "api_key": CALLBACK_KEY,
            "attempts": 5,
            "backoff_base": 0.01,
            "backoff_cap": 0.05,
            "timeout": 5.0,
            **(delivery or {}),
        }
        if backend == "broker":
            return InProcessBroker(options, **kwargs)
        settings: dict[str, Any] = {"workers": 2, "shutdown_grace": 0.0, **kwargs}
        return EmbeddedJobs(jobs_db, CallbackDelivery(**options), **settings)

    return factory


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (gRPC server, job runner) entered, and a client for it."""
    async with app.router.lifespan_context(app), client_for(app) as client:
        yield client


@pytest.fixture
async def jobs_proxy(make_app: AppFactory, make_jobs: JobsFactory) -> AsyncIterator[httpx.AsyncClient]:
    async with running(make_app(jobs=make_jobs())) as client:
        yield client


async def callbacks(spiff: FakeSpiff, count: int, timeout: float = 10.0) -> list[Any]:
    """Waits (off the event loop, where the runner lives) for ``count`` callbacks."""
    return await anyio.to_thread.run_sync(spiff.wait_for, count, timeout)


async def job_in(
    client: httpx.AsyncClient, job_id: str, *states: str, timeout: float = 10.0
) -> dict[str, Any]:
    """Polls ``GET /v1/jobs/{id}`` until the job is in one of ``states``."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        job: dict[str, Any] = response.json()
        if job["state"] in states:
            return job
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} is {job['state']}, not {' or '.join(states)}: {job}")
        await anyio.sleep(0.02)

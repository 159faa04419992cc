"""The embedded job store across restarts (in-process): what a stopped proxy left behind resumes,
once. (The broker mode's counterpart is test_broker.py.)"""

from __future__ import annotations

import json
import sqlite3

import pytest

from jobs import JobState, NewJob
from jobs._store import JobStore
from tests.jobs.conftest import TASK_ID, callback_url, callbacks, job_in, running, spiff_body

pytestmark = pytest.mark.anyio

DELAY_METHOD = "/spiff.connector.example.v1.ExampleService/Delay"


@pytest.fixture
def backend() -> str:
    return "embedded"  # these tests look inside the SQLite store


def delay_job(task_id: str | None = TASK_ID, seconds: int = 0) -> NewJob:
    from spiff.connector.example.v1 import example_pb2

    request = example_pb2.DelayRequest(seconds=seconds, message="recovered").SerializeToString()
    return NewJob(DELAY_METHOD, "example/Delay", request, callback_url(task_id or "t"), task_id)


async def test_a_job_left_running_runs_again_at_start(make_app, make_jobs, jobs_db, spiff):
    store = JobStore(jobs_db)
    await store.open()
    submitted = await store.call(store.submit, delay_job())
    claimed = await store.call(store.claim)
    assert claimed is not None
    assert claimed.id == submitted.job_id
    await store.close()  # as if the process died: the row stays "running"

    async with running(make_app(jobs=make_jobs())) as client:
        (call,) = await callbacks(spiff, 1)
        job = await job_in(client, submitted.job_id, "delivered")
    assert job["attempts"] == 2
    assert call.json()["command_response"]["body"] == {"message": "recovered", "waited_seconds": 0}
    assert call.json()["spiff__logs"] == [
        f"Ran as job {submitted.job_id}, attempt 2: the process running an earlier one stopped."
    ]


async def test_a_job_that_keeps_stopping_the_proxy_is_given_up(make_app, make_jobs, jobs_db, spiff):
    store = JobStore(jobs_db)
    await store.open()
    submitted = await store.call(store.submit, delay_job(seconds=3600))
    for _ in range(2):  # two processes died running it
        assert await store.call(store.claim) is not None
        await store.call(store.requeue_running)
    await store.close()

    async with running(make_app(jobs=make_jobs(run_attempts=2))) as client:
        (call,) = await callbacks(spiff, 1)
        job = await job_in(client, submitted.job_id, "delivered")
    assert job["attempts"] == 3
    payload = call.json()
    assert payload["error"]["error_code"] == "JobAbandoned"
    assert (payload["command_response"]["http_status"], payload["command_response"]["body"]) == (500, None)
    assert "started 2 times" in payload["error"]["message"]


async def test_a_job_left_delivering_resumes_its_callback(make_app, make_jobs, jobs_db, spiff):
    envelope = json.dumps({"command_response": {"body": {"kept": True}}, "command_response_version": 2})
    store = JobStore(jobs_db)
    await store.open()
    submitted = await store.call(store.submit, delay_job())
    await store.call(store.claim)
    await store.call(store.finish_run, submitted.job_id, envelope)
    await store.call(store.record_delivery, submitted.job_id, 1, JobState.DELIVERING, "PUT answered 500")
    await store.close()

    async with running(make_app(jobs=make_jobs())) as client:
        (call,) = await callbacks(spiff, 1)
        job = await job_in(client, submitted.job_id, "delivered")
    assert call.body == envelope.encode()  # the stored result; the command did not run again
    assert job["attempts"] == 1
    assert job["delivery_attempts"] == 2
    assert job["last_error"] is None


async def test_stopping_mid_run_puts_the_job_back_in_the_queue(make_app, make_jobs, jobs_db, spiff):
    async with running(make_app(jobs=make_jobs())) as client:
        accepted = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=30))
        job_id = accepted.json()["command_response"]["body"]["job_id"]
        await job_in(client, job_id, "running")
    store = JobStore(jobs_db)
    await store.open()
    try:
        job = await store.call(store.get, job_id)
    finally:
        await store.close()
    assert job is not None
    assert job.state is JobState.QUEUED
    assert job.attempts == 1
    assert spiff.calls == []


async def test_the_store_keeps_requests_only_until_the_command_ran(make_app, make_jobs, jobs_db, spiff):
    async with running(make_app(jobs=make_jobs())) as client:
        accepted = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=0, message="m"))
        job_id = accepted.json()["command_response"]["body"]["job_id"]
        await job_in(client, job_id, "delivered")
    with sqlite3.connect(jobs_db) as db:
        row = db.execute("SELECT request, result, state FROM jobs WHERE id = ?", (job_id,)).fetchone()
    db.close()
    assert row == (None, None, "delivered")
    assert jobs_db.stat().st_mode & 0o777 == 0o600


async def test_one_process_owns_the_store(jobs_db):
    first = JobStore(jobs_db)
    await first.open()
    try:
        second = JobStore(jobs_db)
        with pytest.raises(RuntimeError, match="in use by another proxy process"):
            await second.open()
    finally:
        await first.close()
    again = JobStore(jobs_db)
    await again.open()
    await again.close()


async def test_only_one_pending_job_per_task(jobs_db):
    store = JobStore(jobs_db)
    await store.open()
    try:
        first = await store.call(store.submit, delay_job())
        second = await store.call(store.submit, delay_job())
        assert (second.job_id, second.created) == (first.job_id, False)
        other = await store.call(store.submit, delay_job("another-task"))
        assert other.created
        anonymous = [await store.call(store.submit, delay_job(None)) for _ in range(2)]
        assert all(s.created for s in anonymous)
        counts = await store.call(store.counts)
        assert counts[JobState.QUEUED] == 4
        # Oldest first.
        claimed = await store.call(store.claim)
        assert claimed is not None
        assert claimed.id == first.job_id
        await store.call(store.record_delivery, first.job_id, 1, JobState.DELIVERED, None)
        fresh = await store.call(store.submit, delay_job())
        assert fresh.created
        assert fresh.job_id != first.job_id
    finally:
        await store.close()


async def test_finished_jobs_are_purged_after_the_retention(jobs_db):
    store = JobStore(jobs_db)
    await store.open()
    try:
        done = await store.call(store.submit, delay_job())
        await store.call(store.claim)
        await store.call(store.record_delivery, done.job_id, 1, JobState.DELIVERED, None)
        waiting = await store.call(store.submit, delay_job("other"))
        view = await store.call(store.get, done.job_id)
        assert view is not None
        assert await store.call(store.purge, view.updated_at) == 0
        assert await store.call(store.purge, view.updated_at + 1) == 1
        assert await store.call(store.get, done.job_id) is None
        assert await store.call(store.get, waiting.job_id) is not None
    finally:
        await store.close()


async def test_a_newer_schema_is_refused(jobs_db):
    with sqlite3.connect(jobs_db) as db:
        db.execute("PRAGMA user_version = 99")
    db.close()
    with pytest.raises(RuntimeError, match="newer proxy"):
        await JobStore(jobs_db).open()

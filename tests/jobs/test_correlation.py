"""A job keeps the request id of the call that made it (both backends): its callback sends it,
also when delivered again; a store written before request ids were kept is brought up to date."""

from __future__ import annotations

import sqlite3

import pytest

from jobs._store import JobStore
from tests.jobs.conftest import callbacks, job_in, running, spiff_body
from tests.jobs.test_jobs import DELAY, accepted_job
from tests.jobs.test_recovery import delay_job

pytestmark = pytest.mark.anyio

# The jobs table as the first released store wrote it (schema 1: no context column).
SCHEMA_1 = """
CREATE TABLE jobs (
    id TEXT PRIMARY KEY, command TEXT NOT NULL, command_id TEXT NOT NULL, request BLOB, task_id TEXT,
    callback_url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'delivering', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0, delivery_attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    result TEXT, created_at REAL NOT NULL, updated_at REAL NOT NULL
);
PRAGMA user_version = 1;
"""


async def test_the_callback_carries_the_calls_request_id(jobs_proxy, spiff):
    headers = {"X-Request-Id": "task-run-51"}
    response = await jobs_proxy.post(DELAY, json=spiff_body(seconds=0), headers=headers)
    accepted_job(response)
    assert response.headers["x-request-id"] == "task-run-51"
    (call,) = await callbacks(spiff, 1)
    assert call.headers["x-request-id"] == "task-run-51"


async def test_a_redelivered_callback_carries_it_too(jobs_proxy, spiff):
    spiff.script("403")
    response = await jobs_proxy.post(DELAY, json=spiff_body(seconds=0), headers={"X-Request-Id": "again-7"})
    job_id = accepted_job(response)
    await job_in(jobs_proxy, job_id, "failed")
    assert (await jobs_proxy.post(f"/v1/jobs/{job_id}/redeliver")).status_code == 202
    first, second = await callbacks(spiff, 2)
    assert first.headers["x-request-id"] == second.headers["x-request-id"] == "again-7"


@pytest.mark.parametrize("backend", ["embedded"])
async def test_a_store_from_before_request_ids_is_brought_up_to_date(make_app, make_jobs, jobs_db, spiff):
    job = delay_job()
    with sqlite3.connect(jobs_db) as db:
        db.executescript(SCHEMA_1)
        db.execute(
            "INSERT INTO jobs (id, command, command_id, request, task_id, callback_url, state, created_at,"
            " updated_at) VALUES ('old-job', ?, ?, ?, ?, ?, 'queued', 1.0, 1.0)",
            (job.command, job.command_id, job.request, job.task_id, job.callback_url),
        )
    db.close()
    store = JobStore(jobs_db)
    await store.open()  # migrates
    await store.close()
    with sqlite3.connect(jobs_db) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    db.close()
    async with running(make_app(jobs=make_jobs())) as client:
        (call,) = await callbacks(spiff, 1)
        await job_in(client, "old-job", "delivered")
    assert "x-request-id" not in call.headers  # a job without one delivers all the same

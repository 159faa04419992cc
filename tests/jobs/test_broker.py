"""The broker mode's own guarantees, in-process on the machine's RabbitMQ and Redis: a redelivered
message resumes where its job got to, a job that keeps stopping its worker is given up, duplicate
messages do nothing, nothing is accepted when the broker does not take the job, and the Redis
records (dedupe per task, purge, counts).

The REST behaviour shared with the embedded mode runs on both backends in test_jobs.py; real
worker processes (two of them, one killed) are in test_broker_workers.py.
"""

from __future__ import annotations

import time
import uuid

import anyio
import pytest

from jobs import BrokerJobs, CallbackDelivery, JobState, NewJob, RedisJobStore, connect_redis
from tests.jobs.broker import BROKER_URL, REDIS_URL, InProcessBroker, drop_namespace, new_namespace
from tests.jobs.conftest import callback_url, callbacks, job_in, running, spiff_body
from tests.ports import free_port

pytestmark = pytest.mark.anyio

DELAY_METHOD = "/spiff.connector.example.v1.ExampleService/Delay"


def delay_job(task_id: str, seconds: int = 0, message: str = "m") -> NewJob:
    from spiff.connector.example.v1 import example_pb2

    request = example_pb2.DelayRequest(seconds=seconds, message=message).SerializeToString()
    return NewJob(DELAY_METHOD, "example/Delay", request, callback_url(task_id), task_id)


@pytest.fixture
def backend() -> str:
    return "broker"


@pytest.fixture
async def store():
    namespace = new_namespace()
    redis = connect_redis(REDIS_URL, retries=1)
    try:
        yield RedisJobStore(redis, namespace)
    finally:
        await redis.aclose()
        await drop_namespace(namespace)


async def test_a_redelivered_job_that_ran_resumes_its_callback_only(make_app, make_jobs, spiff):
    jobs = make_jobs(workers=1)
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        # A worker took the job, ran it, stored the envelope, and died before its callback.
        store, job_id, task = jobs.worker.store, str(uuid.uuid4()), str(uuid.uuid4())
        job = delay_job(task, message="ran before")
        assert (await store.submit(job_id, job)).created
        claim = await store.claim(job_id, "dead:1", job, 0)
        assert (claim.state, claim.attempts) == (JobState.RUNNING, 1)
        await store.finish_run(job_id, '{"stored": "envelope"}')
        await jobs.shim.publish(job_id, job, time.time())

        (call,) = await callbacks(spiff, 1)
        assert call.json() == {"stored": "envelope"}  # the stored envelope, not a second run
        record = await job_in(client, job_id, "delivered")
        assert (record["attempts"], record["delivery_attempts"], record["worker"]) == (1, 1, "in-process")


async def test_a_job_that_keeps_stopping_its_worker_is_given_up(make_app, make_jobs, spiff):
    jobs = make_jobs(workers=1, run_attempts=2)
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        store, job_id, task = jobs.worker.store, str(uuid.uuid4()), str(uuid.uuid4())
        job = delay_job(task, seconds=3600)
        await store.submit(job_id, job)
        for worker in ("dead:1", "dead:2"):  # two workers died running it
            await store.claim(job_id, worker, job, 0)
        await jobs.shim.publish(job_id, job, time.time())

        (call,) = await callbacks(spiff, 1)
        payload = call.json()
        assert payload["error"]["error_code"] == "JobAbandoned"
        assert "started 2 times" in payload["error"]["message"]
        assert payload["command_response"]["http_status"] == 500
        record = await job_in(client, job_id, "delivered")
        assert record["attempts"] == 3


async def test_a_job_the_worker_cannot_handle_fails_visibly(make_app, make_jobs, spiff, caplog):
    """A record that says the command ran but holds no result (written by hand here): the worker
    cannot deliver it, and the job shows failed with the reason instead of pending for ever."""
    jobs = make_jobs(workers=1)
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        store, job_id, task = jobs.worker.store, str(uuid.uuid4()), str(uuid.uuid4())
        job = delay_job(task)
        await store.submit(job_id, job)
        await store.claim(job_id, "dead:1", job, 0)
        await store.finish_run(job_id, "{}")
        await store.redis.hdel(f"{jobs.namespace}:job:{job_id}", "result")
        await jobs.shim.publish(job_id, job, time.time())

        record = await job_in(client, job_id, "failed")
        assert record["last_error"] == (
            "The worker failed: RuntimeError: the job's record is delivering but holds no result to "
            "deliver; its log has the details."
        )
        # Its task is free again: spiff-arena's next attempt starts a new job.
        again = await client.post("/v1/do/example/Delay", json=spiff_body(task, seconds=0))
        assert again.json()["command_response"]["body"]["job_id"] != job_id
        await callbacks(spiff, 1)
    assert any("the worker failed" in r.getMessage() for r in caplog.records)


async def test_a_message_whose_record_is_lost_still_runs(make_app, make_jobs, spiff):
    """Redis restarted without persistence: the message in RabbitMQ still carries the whole job."""
    jobs = make_jobs()
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        job_id, task = str(uuid.uuid4()), str(uuid.uuid4())
        await jobs.shim.publish(job_id, delay_job(task, message="orphan"), 1_700_000_000.0)
        (call,) = await callbacks(spiff, 1)
        assert call.json()["command_response"]["body"] == {"message": "orphan", "waited_seconds": 0}
        record = await job_in(client, job_id, "delivered")
        assert (record["task_id"], record["created_at"]) == (task, "2023-11-14T22:13:20.000Z")


async def test_a_duplicate_message_of_a_finished_job_does_nothing(make_app, make_jobs, spiff):
    jobs = make_jobs(workers=1)  # one consumer, one message at a time: messages run in order
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        response = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=0, message="once"))
        job_id = response.json()["command_response"]["body"]["job_id"]
        await callbacks(spiff, 1)
        await job_in(client, job_id, "delivered")
        # The same message again (its acknowledgement was lost), then another job behind it.
        await jobs.shim.publish(job_id, delay_job("t-dup", message="once"), time.time())
        other = str(uuid.uuid4())
        await jobs.shim.publish(other, delay_job(str(uuid.uuid4()), message="next"), time.time())
        calls = await callbacks(spiff, 2)
        assert [c.json()["command_response"]["body"]["message"] for c in calls] == ["once", "next"]
        assert (await job_in(client, job_id, "delivered"))["attempts"] == 1


async def test_nothing_is_accepted_when_the_broker_does_not_take_the_job(make_app, make_jobs, spiff):
    jobs = make_jobs()
    assert isinstance(jobs, InProcessBroker)
    async with running(make_app(jobs=jobs)) as client:
        broker = jobs.shim._broker
        assert broker is not None
        await broker.write_channel.close()  # type: ignore[attr-defined]
        response = await client.post("/v1/do/example/Delay", json=spiff_body(seconds=0))
        assert response.status_code == 503
        payload = response.json()
        assert payload["error"]["error_code"] == "JobsUnavailable"
        assert "RabbitMQ" in payload["error"]["message"]
        assert payload["command_response"]["http_status"] == 503
        listed = (await client.get("/v1/jobs")).json()
        assert listed["jobs"] == []
        assert listed["counts"]["queued"] == 0
        # The task's pending-job key went with the record: nothing blocks spiff's next attempt.
        assert await jobs.shim.store.redis.keys(f"{jobs.namespace}:task:*") == []
    assert spiff.calls == []


async def test_start_fails_when_redis_is_unreachable():
    jobs = BrokerJobs(BROKER_URL, f"redis://127.0.0.1:{free_port()}/0", new_namespace(), CallbackDelivery())
    from redis.exceptions import ConnectionError as RedisConnectionError

    from rest_shim import Catalogue

    with pytest.raises(RedisConnectionError):
        await jobs.start(Catalogue([]), None)  # type: ignore[arg-type]


async def test_one_pending_job_per_task_until_it_finishes(store):
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    assert (await store.submit(first, delay_job("task-1"))).created
    joined = await store.submit(second, delay_job("task-1"))
    assert (joined.job_id, joined.state, joined.created) == (first, JobState.QUEUED, False)
    await store.published(first)
    await store.claim(first, "w:1", delay_job("task-1"), 0)
    assert (await store.submit(second, delay_job("task-1"))).job_id == first  # running: joined
    await store.finish_run(first, "{}")
    await store.record_delivery(first, 1, JobState.DELIVERED, None)
    retry = await store.submit(second, delay_job("task-1"))  # spiff scheduled a retry
    assert (retry.job_id, retry.created) == (second, True)
    assert (await store.submit(str(uuid.uuid4()), delay_job("task-2"))).created


async def test_a_job_its_shim_never_published_stops_blocking_its_task(store):
    store.abandon_after = 0.0
    stuck, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    await store.submit(stuck, delay_job("task-1"))
    await anyio.sleep(0.01)
    replaced = await store.submit(fresh, delay_job("task-1"))
    assert (replaced.job_id, replaced.created) == (fresh, True)
    view = await store.get(stuck)
    assert view.state is JobState.FAILED
    assert "before the job reached the broker" in view.last_error
    assert await store.redeliver(stuck) == "The job has no result to deliver: its command never ran."
    assert await store.redeliver("no-such-job") is None

    published, again = str(uuid.uuid4()), str(uuid.uuid4())
    await store.submit(published, delay_job("task-2"))
    await store.published(published)
    await anyio.sleep(0.01)
    assert (await store.submit(again, delay_job("task-2"))).job_id == published


async def test_views_counts_lists_and_purge(store):
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for n, job_id in enumerate(ids):
        await store.submit(job_id, delay_job(f"task-{n}"))
        await anyio.sleep(0.002)
    await store.claim(ids[0], "w:1", delay_job("task-0"), 0)
    await store.finish_run(ids[0], "{}")
    await store.record_delivery(ids[0], 2, JobState.DELIVERING, "PUT answered 500")
    view = await store.get(ids[0])
    assert (view.state, view.attempts, view.delivery_attempts, view.last_error, view.worker) == (
        JobState.DELIVERING,
        1,
        2,
        "PUT answered 500",
        "w:1",
    )
    await store.record_delivery(ids[0], 3, JobState.FAILED, "gave up")
    counts = await store.counts()
    assert (counts[JobState.QUEUED], counts[JobState.FAILED], counts[JobState.RUNNING]) == (2, 1, 0)
    assert [v.id for v in await store.list(None, 10)] == ids[::-1]
    assert [v.id for v in await store.list(JobState.QUEUED, 1)] == [ids[2]]
    assert [v.id for v in await store.list(JobState.FAILED, 10)] == [ids[0]]
    # A failed job keeps its envelope for inspection; a purge past the retention drops it.
    assert await store.redis.hget(f"{store.namespace}:job:{ids[0]}", "result") == b"{}"
    finished = (await store.get(ids[0])).updated_at
    assert await store.purge(finished) == 0
    assert await store.purge(finished + 1) == 1
    assert await store.get(ids[0]) is None
    assert [v.id for v in await store.list(None, 10)] == ids[:0:-1]
    assert await store.get("no-such-job") is None

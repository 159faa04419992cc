"""The broker mode inside the test process: the shim's BrokerJobs plus one BrokerWorker consuming
the same RabbitMQ queue through taskiq's receiver, both on the machine's RabbitMQ and Redis.

Each backend gets a namespace of its own (queues, exchange and Redis keys), deleted on close,
so tests never see each other's jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from typing import Any

from jobs import (
    BrokerJobs,
    BrokerWorker,
    CallbackDelivery,
    JobState,
    JobView,
    NewJob,
    RedisJobStore,
    Submitted,
    connect_redis,
    taskiq_broker,
)
from rest_shim._catalog import Catalogue
from rest_shim._jobs import DEFAULT_MAX_PENDING
from server.invocation import Invoker

BROKER_URL = os.environ.get("TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/")
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def new_namespace() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


async def drop_namespace(namespace: str) -> None:
    """Deletes the namespace's queues, exchange and Redis keys."""
    import aio_pika

    connection = await aio_pika.connect(BROKER_URL)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{namespace}.jobs", f"{namespace}.dead_letter"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(namespace)
    redis = connect_redis(REDIS_URL, retries=1)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()


class InProcessBroker:
    """A JobBackend: BrokerJobs for the shim, and a worker in this process on the same queue."""

    def __init__(
        self,
        delivery: dict[str, Any],
        *,
        workers: int = 2,
        job_timeout: float = 3600.0,
        run_attempts: int = 3,
        namespace: str | None = None,
        redis_url: str = REDIS_URL,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.namespace = namespace or new_namespace()
        self.shim = BrokerJobs(
            BROKER_URL, redis_url, self.namespace, CallbackDelivery(**delivery), max_pending=max_pending
        )
        # As in a worker process (jobs.broker_worker): Redis outages are waited out.
        self.worker = BrokerWorker(
            RedisJobStore(connect_redis(redis_url, retries=-1), self.namespace),
            CallbackDelivery(**delivery),
            job_timeout=job_timeout,
            run_attempts=run_attempts,
            name="in-process",
        )
        self.worker_broker = taskiq_broker(BROKER_URL, self.namespace, prefetch=workers)
        self.worker.register(self.worker_broker)
        self._receiver: asyncio.Task[None] | None = None

    def use_catalogue(self, catalogue: Catalogue) -> None:
        self.shim.use_catalogue(catalogue)
        self.worker.use_catalogue(catalogue)

    async def start(self, catalogue: Catalogue, invoker: Invoker) -> None:
        from taskiq.api import run_receiver_task

        await self.shim.start(catalogue, invoker)
        self.worker_broker.is_worker_process = True
        await self.worker_broker.startup()
        await self.worker.start(catalogue, invoker)
        self._receiver = asyncio.create_task(run_receiver_task(self.worker_broker, run_startup=False))

    async def close(self) -> None:
        if self._receiver is not None:
            self._receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._receiver
        await self.worker_broker.shutdown()
        await self.worker.close()
        await self.worker.store.redis.aclose()
        await self.shim.close()
        await drop_namespace(self.namespace)

    async def readiness_problem(self) -> str | None:
        return await self.shim.readiness_problem()

    def callback_problem(self, url: str) -> str | None:
        return self.shim.callback_problem(url)

    async def submit(self, job: NewJob) -> Submitted:
        return await self.shim.submit(job)

    async def get(self, job_id: str) -> JobView | None:
        return await self.shim.get(job_id)

    async def list(self, state: JobState | None, limit: int) -> list[JobView]:
        return await self.shim.list(state, limit)

    async def counts(self) -> dict[JobState, int]:
        return await self.shim.counts()

    async def redeliver(self, job_id: str) -> JobView | None:
        return await self.shim.redeliver(job_id)

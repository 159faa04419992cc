"""The jobs benchmark: long-running commands in both job modes, measured in the same run.

* embedded: ``python -m connector_proxy`` alone; jobs in a SQLite file, run by workers in the proxy.
* broker: the same proxy with ``CONNECTOR_PROXY_JOBS_BROKER_URL`` (RabbitMQ) and
  ``CONNECTOR_PROXY_JOBS_REDIS_URL`` set, plus ``python -m connector_proxy --worker`` processes,
  under a namespace of this run's own (``bench-<hex>``), whose queues, exchange and Redis keys
  are deleted at the end.

Both proxies PUT their callbacks to one receiver (``python -m bench.apps receiver``, a process of
its own), and ``python -m bench.jobs_load`` drives each mode in turn, round after round.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.jobs_report import JobModeRuns, JobRound, JobsReport
from bench.load import run_jobs
from bench.procs import PROXY_ARGV, PYTHON, WORKER_ARGV, Proc, Procs, clean_env, free_ports, http_request

__all__ = ["DEFAULT_BROKER_URL", "DEFAULT_REDIS_URL", "JobsOptions", "measure_jobs"]

DEFAULT_BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
API_KEY = "bench-key"
JOB_WORKERS = 4  # CONNECTOR_PROXY_JOB_WORKERS: the embedded runner's, and each worker process's
BROKER_WORKER_PROCESSES = 2
READY_TIMEOUT = 30.0
LABELS = {"embedded": "embedded (SQLite)", "broker": "broker (RabbitMQ+Redis)"}


@dataclass(frozen=True)
class JobsOptions:
    """How to run the jobs benchmark (from the command line)."""

    connections: int
    duration: float
    rounds: int
    warmup: float
    broker: bool
    broker_url: str
    redis_url: str


@dataclass(frozen=True)
class JobSystem:
    """One mode under test: its proxy's REST port, and its processes (the proxy first)."""

    mode: str
    port: int
    procs: tuple[Proc, ...]

    def logs(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.log_tail()}" for p in self.procs)


def _where(url: str) -> str:
    """``host:port`` of a URL, never its credentials."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)


async def _broker_problem(broker_url: str, redis_url: str) -> str:
    import aio_pika
    from redis.asyncio import Redis

    # aiormq logs a failed connection itself (to stderr, the bench configures no logging);
    # the exception says it all, once, in the bench's own words.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    try:
        connection = await aio_pika.connect(broker_url, timeout=3)
        await connection.close()
    except Exception as exc:
        return f"RabbitMQ not reachable at {_where(broker_url)} ({type(exc).__name__}: {exc})"
    redis = Redis.from_url(redis_url, socket_connect_timeout=3, socket_timeout=3)
    try:
        await redis.ping()
    except Exception as exc:
        return f"Redis not reachable at {_where(redis_url)} ({type(exc).__name__}: {exc})"
    finally:
        await redis.aclose()
    return ""


def broker_problem(broker_url: str, redis_url: str) -> str:
    """Why the broker mode cannot run (RabbitMQ or Redis unreachable), or ""."""
    return asyncio.run(_broker_problem(broker_url, redis_url))


async def _consumers(broker_url: str, queue: str) -> int:
    import aio_pika
    from aio_pika.exceptions import ChannelClosed

    connection = await aio_pika.connect(broker_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except ChannelClosed:  # not declared yet
            return 0
        return int(declared.declaration_result.consumer_count or 0)


def wait_consumers(broker_url: str, namespace: str, count: int, workers: Proc) -> None:
    """Waits until ``count`` consumers take jobs from the namespace's queue (the workers are up)."""
    deadline = time.monotonic() + READY_TIMEOUT
    while asyncio.run(_consumers(broker_url, f"{namespace}.jobs")) < count:
        problem = ""
        if workers.popen.poll() is not None:
            problem = f"the job workers exited with code {workers.popen.returncode}"
        elif time.monotonic() > deadline:
            problem = f"the job workers did not all consume within {READY_TIMEOUT:g} s"
        if problem:
            msg = f"{problem}; their log:\n{workers.log_tail()}"
            raise RuntimeError(msg)
        time.sleep(0.2)


async def _delete_namespace(broker_url: str, redis_url: str, namespace: str) -> int:
    import aio_pika
    from redis.asyncio import Redis

    connection = await aio_pika.connect(broker_url, timeout=5)
    async with connection:
        channel = await connection.channel()
        for queue in (f"{namespace}.jobs", f"{namespace}.dead_letter"):
            await channel.queue_delete(queue)
        await channel.exchange_delete(namespace)
    redis = Redis.from_url(redis_url, socket_connect_timeout=5)
    try:
        keys = [key async for key in redis.scan_iter(match=f"{namespace}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await redis.delete(*keys[start : start + 1000])
    finally:
        await redis.aclose()
    return len(keys)


def delete_namespace(broker_url: str, redis_url: str, namespace: str) -> int:
    """Deletes the namespace's queues and exchange, and its Redis keys (how many were deleted)."""
    return asyncio.run(_delete_namespace(broker_url, redis_url, namespace))


def _common_env(callback_base: str) -> dict[str, str]:
    return clean_env(
        {
            "CONNECTOR_PROXY_CALLBACK_BASE_URL": callback_base,
            "CONNECTOR_PROXY_CALLBACK_API_KEY": API_KEY,
            "CONNECTOR_PROXY_JOB_WORKERS": str(JOB_WORKERS),
            "CONNECTOR_PROXY_SHUTDOWN_GRACE": "1",
        }
    )


def _start_proxy(procs: Procs, name: str, env: Mapping[str, str]) -> tuple[Proc, int]:
    port, grpc_port = free_ports(2)
    listen = {
        "CONNECTOR_PROXY_HOST": "127.0.0.1",
        "CONNECTOR_PROXY_PORT": str(port),
        "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
    }
    proc = procs.start(name, PROXY_ARGV, {**env, **listen})
    proc.wait_ready(port)
    return proc, port


def start_receiver(procs: Procs) -> tuple[Proc, int]:
    (port,) = free_ports(1)
    argv = [PYTHON, "-m", "bench.apps", "receiver", "--port", str(port), "--api-key", API_KEY]
    proc = procs.start("callback-receiver", argv, clean_env({}))
    proc.wait_ready(port)
    return proc, port


def start_embedded(procs: Procs, callback_base: str) -> JobSystem:
    jobs_db = procs.log_dir / f"jobs-embedded-{uuid.uuid4().hex[:8]}.sqlite3"
    env = {**_common_env(callback_base), "CONNECTOR_PROXY_JOBS_DB": str(jobs_db)}
    proc, port = _start_proxy(procs, "jobs-embedded", env)
    return JobSystem("embedded", port, (proc,))


def start_broker(procs: Procs, callback_base: str, options: JobsOptions, namespace: str) -> JobSystem:
    env = {
        **_common_env(callback_base),
        "CONNECTOR_PROXY_JOBS_BROKER_URL": options.broker_url,
        "CONNECTOR_PROXY_JOBS_REDIS_URL": options.redis_url,
        "CONNECTOR_PROXY_JOBS_NAMESPACE": namespace,
    }
    proc, port = _start_proxy(procs, "jobs-broker", env)
    argv = [*WORKER_ARGV, "--workers", str(BROKER_WORKER_PROCESSES)]
    workers = procs.start("jobs-workers", argv, env)
    wait_consumers(options.broker_url, namespace, BROKER_WORKER_PROCESSES, workers)
    return JobSystem("broker", port, (proc, workers))


def probe(system: JobSystem, receiver_port: int) -> None:
    """One job through ``system``, answered 202 and called back, before anything is measured."""
    task = str(uuid.uuid4())
    body = {
        "seconds": 0,
        "message": "probe",
        "spiff__task_id": task,
        "spiff__callback_url": f"http://127.0.0.1:{receiver_port}/v1.0/tasks/1/{task}/callback",
    }
    status, reply = http_request(system.port, "POST", "/v1/do/example/Delay", json.dumps(body).encode())
    if status != 202:
        msg = f"{system.mode}: POST /v1/do/example/Delay answered {status}: {reply[:300]!r}\n{system.logs()}"
        raise RuntimeError(msg)
    path = f"/bench/wait/{task}?timeout={READY_TIMEOUT:g}"
    _, waited = http_request(receiver_port, "GET", path, timeout=READY_TIMEOUT + 5)
    http_request(receiver_port, "POST", "/bench/take", json.dumps([task]).encode())
    if not json.loads(waited)["arrivals"]:
        msg = f"{system.mode}: a probe job was not called back within {READY_TIMEOUT:g} s\n{system.logs()}"
        raise RuntimeError(msg)


def _round_line(label: str, run: JobRound) -> str:
    problems = ", ".join(f"{n} {kind}" for kind, n in run.problems().items() if n)
    errors = f"  ERRORS {run.errors}" if run.errors else ""
    callbacks = f"  CALLBACKS {problems}" if problems else ""
    return (
        f"{label:24} {run.accepted_rps:>7,.0f} accepted/s {run.drained_rps:>7,.0f} drained/s   "
        f"callback p50 {run.p50_ms:.2f} ms  p99 {run.p99_ms:.2f} ms{errors}{callbacks}"
    )


def run_rounds(
    systems: dict[str, JobSystem],
    receiver_port: int,
    options: JobsOptions,
    say: Callable[[str], None],
) -> dict[str, JobModeRuns]:
    """Warms each mode up, then measures them in ``options.rounds`` rounds, alternating the order."""
    modes = list(systems)
    if options.warmup > 0:
        say(f"warming up the job modes ({options.warmup:g} s each)...")
        for mode in modes:
            run_jobs(systems[mode].port, receiver_port, options.connections, options.warmup, options.warmup)
    runs = {mode: JobModeRuns(mode, LABELS[mode]) for mode in modes}
    for round_index in range(options.rounds):
        for mode in modes if round_index % 2 == 0 else modes[::-1]:
            result = run_jobs(
                systems[mode].port, receiver_port, options.connections, options.duration, options.duration
            )
            run = JobRound(latency=result["latency"], burst=result["burst"])
            runs[mode].rounds.append(run)
            say(f"jobs round {round_index + 1}/{options.rounds}  " + _round_line(LABELS[mode], run))
    return runs


def _stray_callbacks(receiver_port: int) -> int:
    """Callbacks the receiver holds that no round took: late duplicates, or for unknown tasks."""
    time.sleep(1.0)
    _, stats = http_request(receiver_port, "GET", "/bench/stats")
    held: int = json.loads(stats)["held"]
    return held


def _config(options: JobsOptions, namespace: str | None) -> dict[str, Any]:
    return {
        "command": "example/Delay",
        "seconds": 0,
        "connections": options.connections,
        "burst_s": options.duration,
        "latency_s": options.duration,
        "latency_concurrency": 1,
        "rounds": options.rounds,
        "warmup_s": options.warmup,
        "embedded_job_workers": JOB_WORKERS,
        "broker_worker_processes": BROKER_WORKER_PROCESSES,
        "broker_jobs_per_process": JOB_WORKERS,
        "broker_namespace": namespace,
        "callback_receiver": "a separate process (raw ASGI on uvicorn, bench.apps receiver)",
        "load_generator": "bench.jobs_load (a separate process, raw keep-alive HTTP/1.1 on uvloop)",
    }


def measure_jobs(options: JobsOptions, procs: Procs, say: Callable[[str], None]) -> JobsReport:
    """Starts the receiver and each mode's processes, measures the modes, stops and cleans up."""
    skipped: dict[str, str] = {}
    problem = broker_problem(options.broker_url, options.redis_url) if options.broker else "--no-broker"
    if problem:
        skipped["broker"] = problem
        say(f"jobs broker mode skipped: {problem}")
    namespace = None if problem else f"bench-{secrets.token_hex(6)}"
    receiver, receiver_port = start_receiver(procs)
    callback_base = f"http://127.0.0.1:{receiver_port}"
    systems: dict[str, JobSystem] = {}
    notes: list[str] = []
    try:
        systems["embedded"] = start_embedded(procs, callback_base)
        if namespace is not None:
            say(f"jobs broker namespace: {namespace}")
            systems["broker"] = start_broker(procs, callback_base, options, namespace)
        for system in systems.values():
            probe(system, receiver_port)
        runs = run_rounds(systems, receiver_port, options, say)
        stray = _stray_callbacks(receiver_port)
    finally:
        for system in systems.values():
            for proc in system.procs:
                procs.stop(proc)
        if namespace is not None and (warning := _clean_up(options, namespace, say)):
            notes.append(warning)
        procs.stop(receiver)
    return JobsReport(
        modes=runs, config=_config(options, namespace), skipped=skipped, stray_callbacks=stray, notes=notes
    )


def _clean_up(options: JobsOptions, namespace: str, say: Callable[[str], None]) -> str:
    """Deletes the namespace (after its processes stopped): "", or a warning rather than an exception."""
    try:
        keys = delete_namespace(options.broker_url, options.redis_url, namespace)
    except Exception as exc:
        warning = (
            f"WARNING: could not delete the broker namespace {namespace} (queues {namespace}.jobs and "
            f"{namespace}.dead_letter, exchange {namespace}, Redis keys {namespace}:*): "
            f"{type(exc).__name__}: {exc}"
        )
        say(warning)
        return warning
    say(f"deleted the broker namespace {namespace}: its queues, its exchange and {keys} Redis keys")
    return ""

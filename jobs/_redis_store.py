"""Job state for the broker mode, in Redis: shared by every shim and worker process.

The broker (RabbitMQ) holds the work itself: a job is owed until its message is acknowledged.
Redis holds what the broker cannot: each job's state for ``/v1/jobs`` and ``JobsService``, the
result while its callback is being delivered (so a worker that dies after running the command
does not run it again), and the one pending job of each spiff task. Every change is one Lua
script, so concurrent shims and workers never see half a transition.

Keys, under a namespace (``CONNECTOR_PROXY_JOBS_NAMESPACE``):

* ``<ns>:job:<id>``: a hash (state, attempts, delivery_attempts, last_error, timestamps, worker,
  command_id, task_id, result while delivering, published).
* ``<ns>:all``: every job id, scored by creation time (newest first for listing).
* ``<ns>:state:<state>``: the ids in one state, scored by creation time; for delivered and failed
  jobs by the time they finished (so old ones are purged by score).
* ``<ns>:task:<task id>``: the id of the task's pending job.

The scripts compute key names from the namespace, so they need one Redis server (not a cluster).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobs._lifecycle import context_of, context_text
from rest_shim._jobs import DEFAULT_MAX_PENDING, JobsBusy, JobState, JobView, NewJob, Submitted

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Claim", "RedisJobStore"]

# Functions the scripts below share: move a job to a state (keeping the state sets right),
# release its task's pending-job key, create a queued job.
_MOVE = """
local function move(p, id, new, now)
  local key = p .. ':job:' .. id
  local old = redis.call('HGET', key, 'state')
  if old then redis.call('ZREM', p .. ':state:' .. old, id) end
  local score = redis.call('HGET', key, 'created_at')
  if new == 'delivered' or new == 'failed' then score = now end
  redis.call('ZADD', p .. ':state:' .. new, score, id)
  redis.call('HSET', key, 'state', new, 'updated_at', now)
end
local function release(p, id)
  local task = redis.call('HGET', p .. ':job:' .. id, 'task_id')
  if task and task ~= '' and redis.call('GET', p .. ':task:' .. task) == id then
    redis.call('DEL', p .. ':task:' .. task)
  end
end
local function create(p, id, command, task, now, method, callback, context)
  local key = p .. ':job:' .. id
  redis.call('HSET', key, 'command_id', command, 'task_id', task, 'state', 'queued', 'attempts', 0,
    'delivery_attempts', 0, 'created_at', now, 'updated_at', now, 'published', 0,
    'method', method, 'callback_url', callback, 'context', context)
  redis.call('ZADD', p .. ':all', now, id)
  redis.call('ZADD', p .. ':state:queued', now, id)
  if task ~= '' then redis.call('SET', p .. ':task:' .. task, id) end
end
"""

# ARGV: namespace, new id, command id, task id ('' for none), now, seconds after which an
# unpublished job is abandoned, gRPC method, callback URL, context (JSON, '' for none).
# Returns {id, state, created (1 or 0)}.
_SUBMIT = (
    _MOVE
    + """
local p, id, command, task, now, stale = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local max_pending = tonumber(ARGV[10])
if task ~= '' then
  local existing = redis.call('GET', p .. ':task:' .. task)
  if existing then
    local f = redis.call('HMGET', p .. ':job:' .. existing, 'state', 'published', 'created_at')
    local state = f[1]
    if state == 'queued' and f[2] == '0' and tonumber(now) - tonumber(f[3]) > stale then
      -- Its shim stopped between storing it and publishing it: nothing will ever run it.
      move(p, existing, 'failed', now)
      redis.call('HSET', p .. ':job:' .. existing, 'last_error',
        'The proxy stopped before the job reached the broker; a later request replaced it.')
    elseif state == 'queued' or state == 'running' or state == 'delivering' then
      return {existing, state, 0}
    end
  end
end
local pending = redis.call('ZCARD', p .. ':state:queued') + redis.call('ZCARD', p .. ':state:running')
  + redis.call('ZCARD', p .. ':state:delivering')
if pending >= max_pending then return {'', 'busy', 0} end
create(p, id, command, task, now, ARGV[7], ARGV[8], ARGV[9])
return {id, 'queued', 1}
"""
)

# ARGV: namespace, id. The job reached the broker.
_PUBLISHED = "redis.call('HSET', ARGV[1] .. ':job:' .. ARGV[2], 'published', 1)"

# ARGV: namespace, id. The job never reached the broker: forget it.
_WITHDRAW = (
    _MOVE
    + """
local p, id = ARGV[1], ARGV[2]
local key = p .. ':job:' .. id
local state = redis.call('HGET', key, 'state')
if state then
  release(p, id)
  redis.call('ZREM', p .. ':state:' .. state, id)
  redis.call('ZREM', p .. ':all', id)
  redis.call('DEL', key)
end
"""
)

# ARGV: namespace, id, now, worker, command id, task id ('' for none), created_at, gRPC method,
# callback URL, context.
# Returns {state, attempts, result, delivery_attempts}: 'running' when the command is to run
# now (attempts counts this one), 'delivering' when it ran already and only the callback is
# owed, 'delivered'/'failed' when nothing is owed any more.
_CLAIM = (
    _MOVE
    + """
local p, id, now, worker = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. ':job:' .. id
if redis.call('EXISTS', key) == 0 then
  -- Redis lost the record (restarted without persistence); the message still carries the job.
  create(p, id, ARGV[5], ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10])
  redis.call('HSET', key, 'published', 1)
end
local f = redis.call('HMGET', key, 'state', 'result', 'delivery_attempts', 'attempts')
if f[1] == 'queued' or f[1] == 'running' then
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  move(p, id, 'running', now)
  redis.call('HSET', key, 'worker', worker)
  return {'running', attempts, false, tonumber(f[3])}
end
if f[1] == 'delivering' then redis.call('HSET', key, 'worker', worker) end
return {f[1], tonumber(f[4]), f[2], tonumber(f[3])}
"""
)

# ARGV: namespace, id, now, result. The command ran; its envelope waits for delivery.
_FINISH_RUN = (
    _MOVE
    + """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
if redis.call('HGET', p .. ':job:' .. id, 'state') == 'running' then
  move(p, id, 'delivering', now)
  redis.call('HSET', p .. ':job:' .. id, 'result', ARGV[4])
end
"""
)

# ARGV: namespace, id, now, state, delivery attempts, last error ('' for none).
_RECORD_DELIVERY = (
    _MOVE
    + """
local p, id, now, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. ':job:' .. id
if redis.call('EXISTS', key) == 0 then return end
move(p, id, state, now)
redis.call('HSET', key, 'delivery_attempts', ARGV[5])
if ARGV[6] == '' then
  redis.call('HDEL', key, 'last_error')
else
  redis.call('HSET', key, 'last_error', ARGV[6])
end
if state == 'delivered' then redis.call('HDEL', key, 'result') end
if state == 'delivered' or state == 'failed' then release(p, id) end
"""
)

# ARGV: namespace, id, now. A failed job whose command ran goes back to delivering (for its
# message to be published again). Returns false (no such job), {'refused', why}, or
# {'ok', method, command id, callback URL, task id, created_at, context}.
_REDELIVER = (
    _MOVE
    + """
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':job:' .. id
local f = redis.call('HMGET', key, 'state', 'result', 'task_id', 'method', 'command_id', 'callback_url',
  'created_at', 'context')
if not f[1] then return false end
if f[1] ~= 'failed' then
  return {'refused', 'The job is ' .. f[1] .. ': only failed jobs are delivered again.'}
end
if not f[2] or not f[4] then
  return {'refused', 'The job has no result to deliver: its command never ran.'}
end
if f[3] ~= '' then
  local other = redis.call('GET', p .. ':task:' .. f[3])
  if other and other ~= id then
    return {'refused', 'Task ' .. f[3] .. ' has another pending job, ' .. other .. '.'}
  end
  redis.call('SET', p .. ':task:' .. f[3], id)
end
move(p, id, 'delivering', now)
redis.call('HSET', key, 'delivery_attempts', 0)
redis.call('HDEL', key, 'last_error')
return {'ok', f[4], f[5], f[6], f[3], f[7], f[8] or ''}
"""
)

# ARGV: namespace, finished before (epoch seconds). Returns the number of jobs deleted.
_PURGE = """
local p, before = ARGV[1], ARGV[2]
local n = 0
for _, state in ipairs({'delivered', 'failed'}) do
  local ids = redis.call('ZRANGEBYSCORE', p .. ':state:' .. state, '-inf', '(' .. before, 'LIMIT', 0, 1000)
  for _, id in ipairs(ids) do
    redis.call('ZREM', p .. ':state:' .. state, id)
    redis.call('ZREM', p .. ':all', id)
    redis.call('DEL', p .. ':job:' .. id)
    n = n + 1
  end
end
return n
"""

_VIEW_FIELDS = (
    "command_id",
    "task_id",
    "state",
    "attempts",
    "delivery_attempts",
    "last_error",
    "created_at",
    "updated_at",
    "worker",
)


@dataclass(frozen=True)
class Claim:
    """What a worker found when it took a job's message (see ``_CLAIM``)."""

    state: JobState
    attempts: int
    result: str | None  # the envelope, when the command ran already
    delivery_attempts: int


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisJobStore:
    """The jobs of one namespace in one Redis database.

    Args:
        redis: a client (``redis.asyncio.Redis``); its retry policy decides how long an
            operation waits out a Redis outage.
        namespace: the key prefix; shims and workers that share jobs use the same one.
        abandon_after: seconds after which a job stored but never published (its shim died in
            between) no longer blocks a new request for its task.
    """

    def __init__(self, redis: Redis, namespace: str, *, abandon_after: float = 60.0) -> None:
        self.redis = redis
        self.namespace = namespace
        self.abandon_after = abandon_after
        self._scripts = {
            name: redis.register_script(source)
            for name, source in {
                "submit": _SUBMIT,
                "published": _PUBLISHED,
                "withdraw": _WITHDRAW,
                "claim": _CLAIM,
                "finish_run": _FINISH_RUN,
                "record_delivery": _RECORD_DELIVERY,
                "redeliver": _REDELIVER,
                "purge": _PURGE,
            }.items()
        }

    async def _run(self, script: str, *args: str | float | int) -> Any:
        return await self._scripts[script](keys=[], args=[self.namespace, *args])

    async def submit(self, job_id: str, job: NewJob, max_pending: int = DEFAULT_MAX_PENDING) -> Submitted:
        """Stores ``job`` as queued, or returns its task's pending job.

        Raises:
            JobsBusy: ``max_pending`` jobs are pending already.
        """
        reply = await self._run(
            "submit",
            job_id,
            job.command_id,
            job.task_id or "",
            time.time(),
            self.abandon_after,
            job.command,
            job.callback_url,
            context_text(job.context),
            max_pending,
        )
        existing_id, state, created = (_text(item) or "" for item in reply)
        if state == "busy":
            raise JobsBusy(max_pending)
        return Submitted(existing_id, JobState(state), created=created == "1")

    async def published(self, job_id: str) -> None:
        await self._run("published", job_id)

    async def withdraw(self, job_id: str) -> None:
        await self._run("withdraw", job_id)

    async def claim(self, job_id: str, worker: str, job: NewJob, created_at: float) -> Claim:
        """Takes the job for ``worker``; ``job`` and ``created_at`` (from its message) recreate a
        record Redis lost."""
        reply = await self._run(
            "claim",
            job_id,
            time.time(),
            worker,
            job.command_id,
            job.task_id or "",
            created_at,
            job.command,
            job.callback_url,
            context_text(job.context),
        )
        state, attempts, result, delivery_attempts = reply
        return Claim(JobState(_text(state) or ""), int(attempts), _text(result), int(delivery_attempts or 0))

    async def finish_run(self, job_id: str, result: str) -> None:
        await self._run("finish_run", job_id, time.time(), result)

    async def record_delivery(
        self, job_id: str, attempts: int, state: JobState, last_error: str | None
    ) -> None:
        await self._run("record_delivery", job_id, time.time(), state.value, attempts, last_error or "")

    async def redeliver(self, job_id: str) -> tuple[NewJob, float] | str | None:
        """Makes a failed job ``delivering`` again: returns what its new message needs (the job,
        without its request, which a delivering job does not use, and its creation time), why
        not, or None when there is no such job."""
        reply = await self._run("redeliver", job_id, time.time())
        if reply is None:
            return None
        outcome, *fields = (_text(item) or "" for item in reply)
        if outcome == "refused":
            return fields[0]
        method, command_id, callback_url, task_id, created_at, context = fields
        job = NewJob(method, command_id, b"", callback_url, task_id or None, context_of(context))
        return job, float(created_at)

    async def purge(self, older_than: float) -> int:
        """Deletes delivered and failed jobs finished before ``older_than`` (up to 1,000 per state)."""
        return int(await self._run("purge", older_than))

    async def get(self, job_id: str) -> JobView | None:
        values = await self.redis.hmget(f"{self.namespace}:job:{job_id}", _VIEW_FIELDS)
        return _view(job_id, values)

    async def list(self, state: JobState | None, limit: int) -> list[JobView]:
        key = f"{self.namespace}:all" if state is None else f"{self.namespace}:state:{state.value}"
        ids = [_text(i) for i in await self.redis.zrevrange(key, 0, limit - 1)]
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hmget(f"{self.namespace}:job:{job_id}", _VIEW_FIELDS)
            rows = await pipe.execute()
        views = (_view(job_id, values) for job_id, values in zip(ids, rows, strict=True) if job_id)
        return [view for view in views if view is not None]

    async def counts(self) -> dict[JobState, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for state in JobState:
                pipe.zcard(f"{self.namespace}:state:{state.value}")
            numbers = await pipe.execute()
        return {state: int(n) for state, n in zip(JobState, numbers, strict=True)}


def _view(job_id: str, values: list[Any]) -> JobView | None:
    command, task, state, attempts, delivered, error, created, updated, worker = (_text(v) for v in values)
    if state is None or command is None:
        return None  # purged, or never existed
    return JobView(
        id=job_id,
        command=command,
        task_id=task or None,
        state=JobState(state),
        attempts=int(attempts or 0),
        delivery_attempts=int(delivered or 0),
        last_error=error or None,
        created_at=float(created or 0),
        updated_at=float(updated or 0),
        worker=worker or None,
    )

"""The embedded job store: one SQLite file (WAL, fully synchronous commits), one process.

Every method is synchronous and must run on the store's own thread (``JobStore.call`` puts it
there): one connection, used by one thread, so statements never interleave. A row holds the
job's request only until the command has run, and its result only until it is delivered.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from jobs._lifecycle import PendingDelivery, context_of, context_text
from rest_shim._jobs import DEFAULT_MAX_PENDING, JobsBusy, JobState, JobView, NewJob, Submitted

__all__ = ["ClaimedJob", "JobStore"]

logger = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA_VERSION = 2
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    command_id TEXT NOT NULL,
    request BLOB,
    task_id TEXT,
    callback_url TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'delivering', 'delivered', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    delivery_attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    result TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    context TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, created_at);
CREATE INDEX IF NOT EXISTS jobs_by_age ON jobs (created_at);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_pending_task ON jobs (task_id)
    WHERE task_id IS NOT NULL AND state IN ('queued', 'running', 'delivering');
PRAGMA user_version = {SCHEMA_VERSION};
"""
# From each version to the next; a store written by an older proxy is brought up to date.
_MIGRATIONS = {
    1: "ALTER TABLE jobs ADD COLUMN context TEXT;",  # the carrier (request id, trace context)
}


@dataclass(frozen=True)
class ClaimedJob:
    """A job a worker has just moved to ``running``."""

    id: str
    command: str
    command_id: str
    request: bytes
    callback_url: str
    attempts: int
    context: dict[str, str]


def _view(row: tuple[Any, ...]) -> JobView:
    return JobView(
        id=row[0],
        command=row[1],
        task_id=row[2],
        state=JobState(row[3]),
        attempts=row[4],
        delivery_attempts=row[5],
        last_error=row[6],
        created_at=row[7],
        updated_at=row[8],
    )


def _redelivery_problem(
    db: sqlite3.Connection, job_id: str, state: str, result: str | None, task_id: str | None
) -> str | None:
    if state != "failed":
        return f"The job is {state}: only failed jobs are delivered again."
    if result is None:
        return "The job has no result to deliver: its command never ran."
    if task_id is not None:
        other = db.execute(
            "SELECT id FROM jobs WHERE task_id = ? AND state IN ('queued', 'running', 'delivering')",
            (task_id,),
        ).fetchone()
        if other is not None:
            return f"Task {task_id} has another pending job, {other[0]}."
    return None


class JobStore:
    """The ``jobs`` table of one SQLite file, locked to this process while it is open.

    Args:
        path: the database file; created (mode 0600: it holds requests, which may carry
            secret parameters and task data) with its directory when missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._executor: ThreadPoolExecutor | None = None
        self._db: sqlite3.Connection | None = None

    # -- running on the store's thread -------------------------------------------------------

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Runs ``fn(*args)`` on the store's thread."""
        if self._executor is None:
            msg = "the job store is not open"
            raise RuntimeError(msg)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    async def open(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="jobs-db")
        try:
            await self.call(self._open)
        except BaseException:
            self._executor.shutdown(wait=True)
            self._executor = None
            raise

    async def close(self) -> None:
        if self._executor is None:
            return
        try:
            await self.call(self._close)
        finally:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- the statements (store thread only) --------------------------------------------------

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            msg = "the job store is not open"
            raise RuntimeError(msg)
        return self._db

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Created private before SQLite opens it; SQLite gives its -wal file the same mode.
        os.close(os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600))
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=0.5)
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                msg = f"{self.path} was written by a newer proxy (job schema {version})"
                raise RuntimeError(msg)
            # One process owns the file: its recovery (running -> queued) assumes nobody else
            # is running those jobs. EXCLUSIVE takes the lock at the first write and keeps it.
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            db.execute("PRAGMA journal_mode = WAL")
            # A commit is on disk before the 202 leaves: no accepted job is lost to a crash.
            db.execute("PRAGMA synchronous = FULL")
            db.execute("BEGIN IMMEDIATE")
            db.execute("COMMIT")
            for old in range(version or SCHEMA_VERSION, SCHEMA_VERSION):
                db.executescript(_MIGRATIONS[old])
            db.executescript(_SCHEMA)
        except sqlite3.OperationalError as exc:
            db.close()
            if "locked" in str(exc):
                msg = (
                    f"the job store {self.path} is in use by another proxy process ({exc}); "
                    "give each proxy its own CONNECTOR_PROXY_JOBS_DB"
                )
                raise RuntimeError(msg) from None
            raise
        except BaseException:
            db.close()
            raise
        self._db = db

    def _close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def ping(self) -> None:
        """Reads from the database (the readiness check)."""
        self.db.execute("SELECT 1 FROM jobs LIMIT 1").fetchall()

    def submit(self, job: NewJob, max_pending: int = DEFAULT_MAX_PENDING) -> Submitted:
        """Stores ``job`` as queued, or returns its task's pending job.

        Raises:
            JobsBusy: ``max_pending`` jobs are pending already.
        """
        db = self.db
        now = time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            if job.task_id is not None:
                row = db.execute(
                    "SELECT id, state FROM jobs"
                    " WHERE task_id = ? AND state IN ('queued', 'running', 'delivering')",
                    (job.task_id,),
                ).fetchone()
                if row is not None:
                    db.execute("COMMIT")
                    return Submitted(row[0], JobState(row[1]), created=False)
            (pending,) = db.execute(
                "SELECT count(*) FROM jobs WHERE state IN ('queued', 'running', 'delivering')"
            ).fetchone()
            if pending >= max_pending:
                raise JobsBusy(max_pending)
            job_id = str(uuid.uuid4())
            db.execute(
                "INSERT INTO jobs (id, command, command_id, request, task_id, callback_url, state,"
                " created_at, updated_at, context) VALUES (?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    job_id,
                    job.command,
                    job.command_id,
                    job.request,
                    job.task_id,
                    job.callback_url,
                    now,
                    now,
                    context_text(job.context) or None,
                ),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return Submitted(job_id, JobState.QUEUED, created=True)

    def claim(self) -> ClaimedJob | None:
        """Moves the oldest queued job to ``running`` (one statement, so atomic) and returns it."""
        rows = self.db.execute(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, updated_at = ?"
            " WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY created_at, rowid LIMIT 1)"
            " RETURNING id, command, command_id, request, callback_url, attempts, context",
            (time.time(),),
        ).fetchall()
        if not rows:
            return None
        job_id, command, command_id, request, callback_url, attempts, context = rows[0]
        return ClaimedJob(
            job_id, command, command_id, bytes(request or b""), callback_url, attempts, context_of(context)
        )

    def finish_run(self, job_id: str, result: str) -> None:
        """The command ran: keep its envelope for delivery and drop the request."""
        self.db.execute(
            "UPDATE jobs SET state = 'delivering', result = ?, request = NULL, updated_at = ?"
            " WHERE id = ? AND state = 'running'",
            (result, time.time(), job_id),
        )

    def requeue_running(self) -> int:
        """Jobs left ``running`` (a previous process died, or this one stopped mid-run) go back to
        the queue; returns how many."""
        cursor = self.db.execute(
            "UPDATE jobs SET state = 'queued', updated_at = ? WHERE state = 'running'", (time.time(),)
        )
        return cursor.rowcount

    def deliveries(self) -> list[PendingDelivery]:
        rows = self.db.execute(
            "SELECT id, command_id, callback_url, result, delivery_attempts, context FROM jobs"
            " WHERE state = 'delivering' ORDER BY updated_at, rowid"
        ).fetchall()
        return [
            PendingDelivery(job_id, command_id, url, result, attempts, context_of(context))
            for job_id, command_id, url, result, attempts, context in rows
        ]

    def record_delivery(self, job_id: str, attempts: int, state: JobState, last_error: str | None) -> None:
        """One callback attempt's outcome; a delivered job's result is dropped, a failed one's kept."""
        # ``result`` is kept unless the job was delivered (CASE, so the statement stays constant).
        self.db.execute(
            "UPDATE jobs SET state = ?, delivery_attempts = ?, last_error = ?, updated_at = ?,"
            " result = CASE WHEN ? = 'delivered' THEN NULL ELSE result END WHERE id = ?",
            (state.value, attempts, last_error, time.time(), state.value, job_id),
        )

    def redeliver(self, job_id: str) -> PendingDelivery | str | None:
        """Makes a failed job ``delivering`` again; returns its delivery, why not, or None."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            row = db.execute(
                "SELECT state, result, task_id, command_id, callback_url, context FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
            problem = None if row is None else _redelivery_problem(db, job_id, *row[:3])
            if row is None or problem is not None:
                db.execute("COMMIT")
                return problem
            db.execute(
                "UPDATE jobs SET state = 'delivering', delivery_attempts = 0, last_error = NULL,"
                " updated_at = ? WHERE id = ?",
                (time.time(), job_id),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return PendingDelivery(job_id, row[3], row[4], row[1], 0, context_of(row[5]))

    def get(self, job_id: str) -> JobView | None:
        row = self.db.execute(
            "SELECT id, command_id, task_id, state, attempts, delivery_attempts, last_error, created_at,"
            " updated_at FROM jobs WHERE id = ?",
            (job_id,),
        ).fetchone()
        return None if row is None else _view(row)

    def list(self, state: JobState | None, limit: int) -> list[JobView]:
        # A NULL state parameter matches every job.
        rows = self.db.execute(
            "SELECT id, command_id, task_id, state, attempts, delivery_attempts, last_error, created_at,"
            " updated_at FROM jobs WHERE ?1 IS NULL OR state = ?1"
            " ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            (None if state is None else state.value, limit),
        ).fetchall()
        return [_view(row) for row in rows]

    def counts(self) -> dict[JobState, int]:
        counts = dict.fromkeys(JobState, 0)
        for state, count in self.db.execute("SELECT state, count(*) FROM jobs GROUP BY state"):
            counts[JobState(state)] = count
        return counts

    def purge(self, older_than: float) -> int:
        """Deletes delivered and failed jobs last changed before ``older_than`` (epoch seconds)."""
        cursor = self.db.execute(
            "DELETE FROM jobs WHERE state IN ('delivered', 'failed') AND updated_at < ?", (older_than,)
        )
        return cursor.rowcount

"""The soak: one proxy under a mix of every local command and malformed input, for minutes.

``python -m bench --soak`` (``make bench ARGS=--soak``) starts the proxy as ``make serve`` does (the
embedded default: REST and gRPC in one process, every setting at its default except the ports, the
job store's path, where callbacks go, and moto's URL listed in CONNECTOR_PROXY_AWS_ENDPOINT_URLS,
which a per-call endpoint_url needs) and, on free loopback ports, every upstream its commands
need: an HTTP target that also stands in for Slack's Web API (``bench.apps target``), an SMTP server
(aiosmtpd) and moto's S3 (``bench.soak_apps``), and a callback receiver for the long-running
``example/Delay`` (``bench.apps receiver``); PostgreSQL and MariaDB are the machine's, each with a
table of the run's own (created and dropped through the proxy's own commands).

Then ``--soak-connections`` clients (64), each waiting a random think time of ``--soak-think-ms``
(100 ms) on average before each request, send the mix of :func:`soak_kinds` for ``--soak-warmup``
seconds and ``--soak-duration`` seconds more (10 minutes), one wrk run per window of
``--soak-window`` seconds, so each window has its own latency distribution; the proxy's RSS and CPU
are read every second. Every answer is checked against its kind's expected status and body
(``bench.soak_lua`` explains how an answer is matched to its request). Errors, which must be 0:
unexpected answers (any 5xx among them), connection errors and timeouts, answers that could not be
matched, long-running jobs that failed or never finished, ERROR lines in the proxy's log, and the
proxy exiting. The RSS is flat when the largest of the last windows' RSS is within
``--soak-rss-tolerance`` MiB of the first window after the warm-up. The report prints a table per
window and per kind and writes ``bench/results/soak.json``; the exit code is 1 when there are errors
or the RSS grew beyond the tolerance.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import resource
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from bench.load import ensure_wrk, percentile
from bench.procs import (
    PROXY_ARGV,
    PYTHON,
    ROOT,
    Proc,
    Procs,
    clean_env,
    cpu_seconds,
    free_ports,
    machine,
    rss_mib,
)
from bench.soak_apps import ACCESS_KEY_ID, REGION, SECRET_ACCESS_KEY
from bench.soak_lua import Kind, lua_script

__all__ = [
    "DEFAULT_MYSQL",
    "DEFAULT_POSTGRES",
    "SOAK_RESULTS",
    "SoakOptions",
    "SoakReport",
    "SoakStack",
    "Window",
    "main",
    "run_soak",
    "sabotaged",
    "soak_kinds",
]

SOAK_RESULTS = Path(__file__).resolve().parent / "results" / "soak.json"
DEFAULT_POSTGRES = "host=127.0.0.1 port=5432 dbname=test user=postgres"
DEFAULT_MYSQL = "mysql://root@127.0.0.1:3306/test"
# The proxy's default CONNECTOR_PROXY_MAX_BODY_BYTES (32 MiB): the oversized kind sends one byte more.
MAX_BODY_BYTES = 32 * 1024 * 1024
CALLBACK_KEY = "soak-callback-key"
BUCKET = "soak-bucket"
STORED_OBJECT = "soak/stored.txt"
UPLOADED_OBJECT = "soak/uploaded.txt"
# Each window's connections start one after the other over this many milliseconds.
RAMP_MS = 1000
# How long the jobs may take to finish after the last window.
DRAIN_TIMEOUT = 60.0

Say = Callable[[str], None]


@dataclass(frozen=True)
class SoakOptions:
    connections: int = 64
    duration: int = 600  # seconds measured after the warm-up
    window: int = 30  # seconds per window (one wrk run each)
    warmup: int = 30  # seconds of load before the first steady window (errors count)
    rss_tolerance_mib: float = 16.0
    think_ms: int = 100  # each client's mean wait before a request (uniform, 0 to twice this)
    timeout: int = 10  # wrk's per-request timeout, seconds
    postgres: str = DEFAULT_POSTGRES
    mysql: str = DEFAULT_MYSQL

    @property
    def windows(self) -> int:
        return max(1, -(-self.duration // self.window))


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _ok(*markers: str) -> tuple[str, ...]:
    return ('"error":null', *markers)


def _error(code: str, *markers: str) -> tuple[str, ...]:
    return ('"command_response_version":2', f'"error_code":"{code}"', *markers)


@dataclass(frozen=True)
class Upstreams:
    target: int  # bench.apps target: GET /json, POST /echo, POST /api/chat.postMessage
    smtp: int
    moto: int
    receiver: int


def soak_kinds(up: Upstreams, table: str, postgres: str, mysql: str) -> list[Kind]:
    """The mix: every local command against its local upstream, and each malformed input."""
    target = f"http://127.0.0.1:{up.target}"
    aws = {
        "endpoint_url": f"http://127.0.0.1:{up.moto}",
        "region": REGION,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
    }
    data_url = "data:text/plain;name=soak.txt;base64," + base64.b64encode(b"soak " * 200).decode()
    callback = f"http://127.0.0.1:{up.receiver}/v1.0/tasks/soak/{{task}}/callback"
    delay = {"seconds": 0, "message": "soak", "spiff__task_id": "{task}", "spiff__callback_url": callback}
    email = {
        "smtp_host": "127.0.0.1",
        "smtp_port": up.smtp,
        "email_subject": "soak",
        "email_body": "A message from the soak.",
        "email_to": "soak@example.com",
        "email_from": "bench@example.com",
    }
    slack = {"token": "xoxb-soak", "channel": "C0123456789", "message": "soak", "api_url": f"{target}/api/"}
    select = {"columns": ["id", "note"], "order_by": [["id", "desc"]], "limit": 5}
    insert = {"columns": ["note"], "values": [["soak"]]}

    def do(name: str, command: str, params: dict[str, Any], status: int, markers: tuple[str, ...]) -> Kind:
        return Kind(name, "POST", f"/v1/do/{command}", status, markers, body=_json(params))

    example = "/v1/do/example/Example"
    kinds = [
        do("example", "example/Example", {"message": "soak"}, 200, _ok('"message":"soak"')),
        do("delay", "example/Delay", delay, 202, _ok('"job_id"')),
        do("http_get", "http/GetRequestV2", {"url": f"{target}/json"}, 200, _ok('"name":"bench"')),
        do(
            "http_post",
            "http/PostRequestV2",
            {"url": f"{target}/echo", "data": {"soak": True}},
            200,
            _ok('"received":'),
        ),
        do("smtp_send", "smtp/SendEmail", email, 200, _ok('"accepted":["soak@example.com"]')),
        do("slack_post", "slack/PostMessage", slack, 200, _ok('"ok":true')),
        do(
            "s3_upload",
            "aws/UploadFileData",
            {"file_data": data_url, "bucket": BUCKET, "object_name": UPLOADED_OBJECT, **aws},
            200,
            _ok('"result":"success"'),
        ),
        do(
            "s3_get",
            "aws/GetFileData",
            {"bucket": BUCKET, "object_name": STORED_OBJECT, **aws},
            200,
            _ok('"file_data":"data:text/plain'),
        ),
        do(
            "s3_presign",
            "aws/GetPresignedUrl",
            {"bucket": BUCKET, "object_name": STORED_OBJECT, **aws},
            200,
            _ok('"url":"http://127.0.0.1'),
        ),
        do(
            "pg_insert",
            "postgres_v2/InsertValuesV2",
            {"database_connection_str": postgres, "table_name": table, "schema": insert},
            200,
            _ok('"rowcount":1'),
        ),
        do(
            "pg_select",
            "postgres_v2/SelectValuesV2",
            {"database_connection_str": postgres, "table_name": table, "schema": select},
            200,
            _ok('"body":[['),
        ),
        do(
            "mysql_insert",
            "mysql/InsertValuesV2",
            {"database_connection_str": mysql, "table_name": table, "schema": insert},
            200,
            _ok('"rowcount":1'),
        ),
        do(
            "mysql_select",
            "mysql/SelectValuesV2",
            {"database_connection_str": mysql, "table_name": table, "schema": select},
            200,
            _ok('"body":[['),
        ),
        Kind("typeahead", "GET", "/v1/typeahead/cities?prefix=san&limit=10", 200, ('"country_code"',)),
        Kind("commands", "GET", "/v1/commands", 200, ('"id":"example/Example"',)),
        # Malformed input: each gets its documented 4xx and the JSON envelope.
        Kind("bad_json", "POST", example, 400, _error("InvalidJson"), body=b'{"message": "soak"'),
        Kind("not_object", "POST", example, 400, _error("InvalidParameters"), body=b'["soak"]'),
        Kind(
            "wrong_type",
            "POST",
            example,
            400,
            _error("InvalidParameters", "message must be a string"),
            body=_json({"message": {"text": "soak"}}),
        ),
        Kind(
            "missing_param",
            "POST",
            example,
            400,
            _error("InvalidParameters", "message is required"),
            body=b"{}",
        ),
        Kind(
            "unknown_command",
            "POST",
            "/v1/do/example/NoSuchCommand",
            404,
            _error("command_not_found"),
            body=_json({"message": "soak"}),
        ),
        # 32 MiB + 1 byte, sent in full (the proxy answers from Content-Length and discards the rest):
        # by one connection, once per cycle (every 2 to 3 s at the default think time).
        Kind(
            "oversized",
            "POST",
            example,
            413,
            _error("PayloadTooLarge"),
            oversize=MAX_BODY_BYTES + 1,
            thread=1,
        ),
    ]
    by_name = {kind.name: kind for kind in kinds}
    return [by_name[name] for name in _ORDER]


# The order each connection sends the kinds in: the slow ones (a thread pool, a connection pool, an
# upstream of its own) spread between fast ones, so that connections do not bunch up on one connector.
_ORDER = (
    "example",
    "s3_upload",
    "bad_json",
    "pg_insert",
    "http_get",
    "smtp_send",
    "not_object",
    "mysql_insert",
    "commands",
    "s3_get",
    "wrong_type",
    "pg_select",
    "http_post",
    "slack_post",
    "missing_param",
    "mysql_select",
    "typeahead",
    "s3_presign",
    "unknown_command",
    "delay",
    "oversized",
)


def exchange(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 30.0
) -> tuple[int, str, bytes]:
    """One request on a fresh connection to 127.0.0.1: the status, the content type and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.getheader("content-type") or "", response.read()
    finally:
        conn.close()


def _preflight_body(kind: Kind) -> bytes | None:
    if kind.oversize:
        return b'{"message":"' + b"x" * (kind.oversize - 14) + b'"}'
    if kind.body is not None and kind.templated:
        return kind.body.replace(b"{task}", b"soak-preflight")
    return kind.body


class SoakStack:
    """The proxy and its upstreams, started and prepared; ``with SoakStack(...)`` stops nothing
    itself (``procs`` does) but drops the run's tables through the proxy on exit."""

    def __init__(self, procs: Procs, work_dir: Path, options: SoakOptions, say: Say = print) -> None:
        self.procs = procs
        self.work_dir = work_dir
        self.options = options
        self.say = say
        self.table = f"bench_soak_{os.getpid()}"
        self.proxy: Proc | None = None
        self.port = 0
        self.receiver_port = 0
        self.kinds: list[Kind] = []
        self._runs = 0
        self._tables: list[tuple[str, str]] = []

    def __enter__(self) -> SoakStack:
        try:
            self._start()
        except BaseException:
            self._drop_tables()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._drop_tables()

    def next_label(self) -> str:
        """A label unique to one wrk run (it makes the long-running calls' task ids unique)."""
        self._runs += 1
        return f"{os.getpid()}-{self._runs}"

    def _start(self) -> None:
        target, smtp, moto, receiver, port, grpc_port = free_ports(6)
        self.say(
            "starting the upstreams (HTTP target and Slack stand-in, SMTP, moto's S3, callback receiver)..."
        )
        started = [
            (self._spawn("target", ["bench.apps", "target", "--port", str(target)]), target, "/liveness"),
            (
                self._spawn(
                    "receiver", ["bench.apps", "receiver", "--port", str(receiver), "--api-key", CALLBACK_KEY]
                ),
                receiver,
                "/liveness",
            ),
            (
                self._spawn("moto", ["bench.soak_apps", "moto", "--port", str(moto), "--bucket", BUCKET]),
                moto,
                "/bench/ready",
            ),
        ]
        self._spawn("smtp", ["bench.soak_apps", "smtp", "--port", str(smtp)])
        env = clean_env(
            {
                "CONNECTOR_PROXY_HOST": "127.0.0.1",
                "CONNECTOR_PROXY_PORT": str(port),
                "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
                "CONNECTOR_PROXY_JOBS_DB": str(self.work_dir / "soak-jobs.sqlite3"),
                "CONNECTOR_PROXY_CALLBACK_BASE_URL": f"http://127.0.0.1:{receiver}",
                "CONNECTOR_PROXY_CALLBACK_API_KEY": CALLBACK_KEY,
                # A per-call endpoint_url is used only when listed (the egress policy).
                "CONNECTOR_PROXY_AWS_ENDPOINT_URLS": f"http://127.0.0.1:{moto}",
                "CONNECTOR_PROXY_SHUTDOWN_GRACE": "1",
            }
        )
        self.proxy = self.procs.start("proxy", PROXY_ARGV, env)
        self.proxy.wait_ready(port)
        for proc, proc_port, path in started:
            proc.wait_ready(proc_port, path, timeout=60.0)
        _wait_tcp(smtp, 20.0)
        self.port, self.receiver_port = port, receiver
        self._prepare(Upstreams(target, smtp, moto, receiver))

    def _spawn(self, name: str, argv: list[str]) -> Proc:
        return self.procs.start(name, [PYTHON, "-m", *argv], clean_env({}))

    def _call(self, command: str, params: dict[str, Any]) -> bytes:
        status, _, body = exchange(self.port, "POST", f"/v1/do/{command}", _json(params))
        if status != 200:
            msg = f"{command} answered {status} while preparing the soak: {body[:500]!r}"
            raise RuntimeError(msg)
        return body

    def _prepare(self, up: Upstreams) -> None:
        opts = self.options
        columns = {
            "postgres_v2": [
                {"name": "id", "type": "bigserial primary key"},
                {"name": "note", "type": "text"},
            ],
            "mysql": [
                {"name": "id", "type": "BIGINT PRIMARY KEY AUTO_INCREMENT"},
                {"name": "note", "type": "VARCHAR(64)"},
            ],
        }
        for connector, dsn in (("postgres_v2", opts.postgres), ("mysql", opts.mysql)):
            base = {"database_connection_str": dsn, "table_name": self.table}
            self._call(f"{connector}/DropTableV2", base)
            self._tables.append((connector, dsn))
            schema = {"column_definitions": columns[connector]}
            self._call(f"{connector}/CreateTableV2", {**base, "schema": schema})
        aws = {
            "endpoint_url": f"http://127.0.0.1:{up.moto}",
            "region": REGION,
            "aws_access_key_id": ACCESS_KEY_ID,
            "aws_secret_access_key": SECRET_ACCESS_KEY,
        }
        stored = "data:text/plain;name=stored.txt;base64," + base64.b64encode(b"stored by the soak").decode()
        self._call(
            "aws/UploadFileData", {"file_data": stored, "bucket": BUCKET, "object_name": STORED_OBJECT, **aws}
        )
        self.kinds = soak_kinds(up, self.table, opts.postgres, opts.mysql)
        self.preflight(self.kinds)

    def preflight(self, kinds: Sequence[Kind]) -> None:
        """Sends each kind once and checks its answer, so that a broken setup fails before the
        load (the first use also loads each connector's SDK and builds the typeahead index)."""
        problems = []
        for kind in kinds:
            status, content_type, body = exchange(self.port, kind.method, kind.path, _preflight_body(kind))
            if not kind.check(status, content_type, body):
                problems.append(f"{kind.name}: expected {kind.expected()}, got {status} {body[:300]!r}")
        if problems:
            msg = "the soak's requests do not get their expected answers:\n  " + "\n  ".join(problems)
            raise RuntimeError(msg)

    def _drop_tables(self) -> None:
        if self.proxy is None or self.proxy.popen.poll() is not None:
            return
        for connector, dsn in self._tables:
            with contextlib.suppress(OSError, http.client.HTTPException, RuntimeError):
                self._call(
                    f"{connector}/DropTableV2", {"database_connection_str": dsn, "table_name": self.table}
                )
        self._tables.clear()


def _proxy(stack: SoakStack) -> Proc:
    if stack.proxy is None:
        msg = "the soak's proxy has not been started"
        raise RuntimeError(msg)
    return stack.proxy


def _wait_tcp(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with contextlib.closing(http.client.HTTPConnection("127.0.0.1", port, timeout=1.0)) as conn:
                conn.connect()
                return
        except OSError:
            if time.monotonic() > deadline:
                msg = f"nothing listens on 127.0.0.1:{port} after {timeout:g} s"
                raise RuntimeError(msg) from None
            time.sleep(0.05)


@dataclass
class Window:
    """One wrk run of the soak."""

    index: int
    phase: str  # "warm-up" or "soak"
    started_s: float  # since the soak's start
    seconds: float
    requests: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    socket_errors: dict[str, int]  # wrk's connect, read, write, timeout
    uncorrelated: int
    kinds: dict[str, list[int]]  # name -> [answers, unexpected]
    samples: dict[str, str]
    rss_end_mib: float
    rss_max_mib: float
    proxy_cpu_pct: float
    wrk_cpu_pct: float
    wrk_failure: str = ""

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @property
    def unexpected(self) -> int:
        return sum(bad for _, bad in self.kinds.values())

    @property
    def errors(self) -> int:
        return self.unexpected + sum(self.socket_errors.values()) + self.uncorrelated + bool(self.wrk_failure)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data |= {"rps": round(self.rps, 1), "unexpected": self.unexpected, "errors": self.errors}
        return data


def _parse_wrk(stdout: str) -> dict[str, Any]:
    parsed: dict[str, Any] = {"kinds": {}, "samples": {}, "summary": None, "uncorrelated": 0}
    for line in stdout.splitlines():
        tag, _, rest = line.partition(" ")
        if tag == "SOAK_SUMMARY":
            parsed["summary"] = [int(float(x)) for x in rest.split()]
        elif tag == "SOAK_UNCORRELATED":
            parsed["uncorrelated"] = int(rest)
        elif tag == "SOAK_KIND":
            name, answers, bad = rest.split()
            parsed["kinds"][name] = [int(answers), int(bad)]
        elif tag == "SOAK_SAMPLE":
            name, _, sample = rest.partition(" ")
            parsed["samples"][name] = sample
    return parsed


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_window(
    wrk: str,
    script: Path,
    stack: SoakStack,
    index: int,
    phase: str,
    seconds: int,
    soak_start: float,
    label: str,
    opts: SoakOptions,
) -> Window:
    """One wrk run of ``seconds``, reading the proxy's RSS every second meanwhile."""
    proxy = _proxy(stack)
    pid = proxy.pid
    argv = [wrk, f"-t{opts.connections}", f"-c{opts.connections}", f"-d{seconds}s"]
    argv += [
        "--timeout",
        f"{opts.timeout}s",
        "-s",
        str(script),
        f"http://127.0.0.1:{stack.port}",
        "--",
        label,
    ]
    started = time.monotonic()
    cpu_before, wrk_cpu_before = cpu_seconds(pid), _children_cpu()
    rss_samples = [rss_mib(pid)]
    failure = ""
    with subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True
    ) as proc:
        deadline = started + seconds + opts.timeout + 30
        while True:
            try:
                stdout, stderr = proc.communicate(timeout=1.0)
                break
            except subprocess.TimeoutExpired:
                if proxy.popen.poll() is not None or time.monotonic() > deadline:
                    proc.kill()
                    stdout, stderr = proc.communicate()
                    failure = "the proxy exited" if proxy.popen.poll() is not None else "wrk overran"
                    break
                rss_samples.append(rss_mib(pid))
    elapsed = time.monotonic() - started
    if proxy.popen.poll() is not None:
        failure = f"the proxy exited with {proxy.popen.returncode}"
        rss_end = cpu_after = 0.0
    else:
        rss_end, cpu_after = rss_mib(pid), cpu_seconds(pid)
    wrk_cpu = _children_cpu() - wrk_cpu_before
    parsed = _parse_wrk(stdout)
    summary = parsed["summary"]
    if summary is None and not failure:
        failure = f"wrk exited with {proc.returncode} and no summary: {stderr.strip()[:500]}"
    requests, duration_us, p50, p99, top, connect, read, write, _status, timeout = summary or [0] * 10
    return Window(
        index=index,
        phase=phase,
        started_s=round(started - soak_start, 1),
        seconds=duration_us / 1e6 if duration_us else elapsed,
        requests=requests,
        p50_ms=p50 / 1000,
        p99_ms=p99 / 1000,
        max_ms=top / 1000,
        socket_errors={"connect": connect, "read": read, "write": write, "timeout": timeout},
        uncorrelated=parsed["uncorrelated"],
        kinds=parsed["kinds"],
        samples=parsed["samples"],
        rss_end_mib=round(rss_end, 1),
        rss_max_mib=round(max([*rss_samples, rss_end]), 1),
        proxy_cpu_pct=round(100 * (cpu_after - cpu_before) / elapsed, 1) if cpu_after else 0.0,
        wrk_cpu_pct=round(100 * wrk_cpu / elapsed, 1),
        wrk_failure=failure,
    )


@dataclass
class SoakReport:
    options: SoakOptions
    windows: list[Window]
    kinds: list[Kind]
    jobs: dict[str, Any] = field(default_factory=dict)
    log_errors: list[str] = field(default_factory=list)
    log_error_count: int = 0
    access: dict[str, dict[str, Any]] = field(default_factory=dict)  # per command, from the access log
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def steady(self) -> list[Window]:
        return [w for w in self.windows if w.phase == "soak"]

    @property
    def totals(self) -> dict[str, list[int]]:
        totals = {kind.name: [0, 0] for kind in self.kinds}
        for window in self.windows:
            for name, (answers, bad) in window.kinds.items():
                totals.setdefault(name, [0, 0])
                totals[name][0] += answers
                totals[name][1] += bad
        return totals

    @property
    def job_errors(self) -> int:
        return int(self.jobs.get("errors", 0))

    @property
    def errors(self) -> int:
        return sum(w.errors for w in self.windows) + self.job_errors + self.log_error_count

    @property
    def rss_baseline_mib(self) -> float:
        steady = self.steady
        return steady[0].rss_end_mib if steady else 0.0

    @property
    def rss_last_mib(self) -> float:
        steady = self.steady
        return max(w.rss_end_mib for w in steady[-3:]) if steady else 0.0

    @property
    def rss_growth_mib(self) -> float:
        return self.rss_last_mib - self.rss_baseline_mib

    @property
    def rss_flat(self) -> bool:
        return bool(self.steady) and self.rss_growth_mib <= self.options.rss_tolerance_mib

    @property
    def failed(self) -> bool:
        return self.errors > 0 or not self.rss_flat

    def text(self) -> str:
        opts = self.options
        steady = self.steady
        total_requests = sum(w.requests for w in steady)
        total_seconds = sum(w.seconds for w in steady)
        lines = [
            f"soak: {opts.connections} connections (think time {opts.think_ms} ms on average), "
            f"{opts.warmup} s warm-up + {len(steady)} windows of {opts.window} s, "
            f"{len(self.kinds)} request kinds",
            "",
            f"{'window':>6} {'phase':8} {'at s':>6} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'errors':>6} {'RSS MiB':>8} {'RSS max':>8} {'proxy CPU':>9} {'wrk CPU':>8}",
        ]
        for w in self.windows:
            lines.append(
                f"{w.index:>6} {w.phase:8} {w.started_s:>6.0f} {w.rps:>7,.0f} {w.p50_ms:>7.2f} "
                f"{w.p99_ms:>7.2f} {w.max_ms:>7.1f} {w.errors:>6} {w.rss_end_mib:>8.1f} "
                f"{w.rss_max_mib:>8.1f} {w.proxy_cpu_pct:>8.0f}% {w.wrk_cpu_pct:>7.0f}%"
            )
            if w.wrk_failure:
                lines.append(f"       {w.wrk_failure}")
        lines += ["", f"{'kind':16} {'expected':28} {'answers':>9} {'unexpected':>10}"]
        expected = {kind.name: kind.expected() for kind in self.kinds}
        for name, (answers, bad) in self.totals.items():
            lines.append(f"{name:16} {expected.get(name, '?'):28} {answers:>9,} {bad:>10,}")
        samples: dict[str, str] = {}
        for w in self.windows:
            for name, sample in w.samples.items():
                samples.setdefault(name, sample)
        for name, sample in samples.items():
            lines.append(f"  first unexpected answer to {name}: {sample}")
        if self.access:
            lines += [
                "",
                "server-side, from the access log (every /v1/do answer of the run, preflight included):",
            ]
            lines.append(f"{'command':28} {'answers':>9} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>8}  statuses")
            for command, row in self.access.items():
                statuses = ", ".join(f"{k}: {v:,}" for k, v in row["statuses"].items())
                lines.append(
                    f"{command:28} {row['answers']:>9,} {row['p50_ms']:>7.1f} {row['p99_ms']:>7.1f} "
                    f"{row['max_ms']:>8.1f}  {statuses}"
                )
        sockets = {
            k: sum(w.socket_errors[k] for w in self.windows) for k in ("connect", "read", "write", "timeout")
        }
        lines += [
            "",
            f"requests: {total_requests:,} in {total_seconds:.0f} s after the warm-up "
            f"({total_requests / total_seconds if total_seconds else 0:,.0f} req/s); "
            f"p99 per window {_range(w.p99_ms for w in steady)} ms",
            f"connection errors and timeouts: {sum(sockets.values())} "
            f"({', '.join(f'{k} {v}' for k, v in sockets.items())}); "
            f"unmatched answers: {sum(w.uncorrelated for w in self.windows)}",
            f"long-running jobs: {self.jobs.get('summary', 'not checked')}",
            f"ERROR lines in the proxy's log: {self.log_error_count}",
        ]
        lines += [f"  {line}" for line in self.log_errors]
        verdict = "flat" if self.rss_flat else "GREW"
        lines += [
            f"proxy RSS: {self.rss_baseline_mib:.1f} MiB after the first steady window, "
            f"{self.rss_last_mib:.1f} MiB at most in the last {min(3, len(steady))}: "
            f"{self.rss_growth_mib:+.1f} MiB, {verdict} (tolerance {opts.rss_tolerance_mib:g} MiB)",
            f"errors: {self.errors}" + ("" if self.errors == 0 else "  (must be 0)"),
            "verdict: " + ("FAIL" if self.failed else "pass"),
        ]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        steady = self.steady
        seconds = sum(w.seconds for w in steady)
        return {
            "meta": self.meta,
            "options": asdict(self.options) | {"postgres": "(set)", "mysql": "(set)"},
            "kinds": [
                {
                    "name": k.name,
                    "method": k.method,
                    "path": k.path,
                    "expected": k.expected(),
                    "every": k.every,
                }
                for k in self.kinds
            ],
            "windows": [w.to_json() for w in self.windows],
            "totals": {name: {"answers": a, "unexpected": b} for name, (a, b) in self.totals.items()},
            "requests": sum(w.requests for w in steady),
            "rps": round(sum(w.requests for w in steady) / seconds, 1) if seconds else 0.0,
            "jobs": self.jobs,
            "log_errors": {"count": self.log_error_count, "first": self.log_errors},
            "access_log": self.access,
            "rss": {
                "baseline_mib": self.rss_baseline_mib,
                "last_mib": self.rss_last_mib,
                "growth_mib": round(self.rss_growth_mib, 1),
                "tolerance_mib": self.options.rss_tolerance_mib,
                "flat": self.rss_flat,
            },
            "errors": self.errors,
            "failed": self.failed,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def _range(values: Any) -> str:
    items = list(values)
    return f"{min(items):.2f} to {max(items):.2f}" if items else "-"


def _get_json(port: int, path: str) -> Any:
    status, _, body = exchange(port, "GET", path, timeout=10.0)
    if status != 200:
        msg = f"GET {path} answered {status}: {body[:300]!r}"
        raise RuntimeError(msg)
    return json.loads(body)


def check_jobs(stack: SoakStack, accepted: int) -> dict[str, Any]:
    """Waits for the long-running calls' jobs to finish; errors: jobs failed or still pending,
    callbacks the receiver found bad (no credential, not a successful envelope), fewer callbacks
    than 202 answers."""
    deadline = time.monotonic() + DRAIN_TIMEOUT
    while True:
        counts = _get_json(stack.port, "/v1/jobs?limit=1")["counts"]
        pending = counts["queued"] + counts["running"] + counts["delivering"]
        if pending == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    stats = _get_json(stack.receiver_port, "/bench/stats")
    errors = pending + counts["failed"] + stats["bad"] + max(0, accepted - stats["callbacks"])
    summary = (
        f"{accepted:,} answered 202; jobs delivered {counts['delivered']:,}, failed {counts['failed']}, "
        f"unfinished {pending}; callbacks received {stats['callbacks']:,}, bad {stats['bad']}"
    )
    return {"accepted": accepted, "counts": counts, "callbacks": stats, "errors": errors, "summary": summary}


_ACCESS = re.compile(r" access \[[^\]]*\]: (\S+) answered (\d{3})(?: \S+)? in ([\d.]+) ms")


@dataclass
class LogScan:
    """What the proxy's plain-text log says: ERROR and CRITICAL records (and tracebacks), and per
    command the access lines' statuses and durations (the server-side latency of each ``/v1/do``)."""

    error_count: int = 0
    errors: list[str] = field(default_factory=list)
    durations_ms: dict[str, list[float]] = field(default_factory=dict)
    statuses: dict[str, Counter[int]] = field(default_factory=dict)

    def commands(self) -> dict[str, dict[str, Any]]:
        table = {}
        for command in sorted(self.durations_ms):
            durations = sorted(self.durations_ms[command])
            table[command] = {
                "answers": len(durations),
                "statuses": {str(k): v for k, v in sorted(self.statuses[command].items())},
                "p50_ms": percentile(durations, 50),
                "p99_ms": percentile(durations, 99),
                "max_ms": durations[-1],
            }
        return table


def scan_log(path: Path, limit: int = 5) -> LogScan:
    scan = LogScan()
    with path.open(errors="replace") as log:
        for line in log:
            fields = line.split(maxsplit=3)
            if (len(fields) > 2 and fields[2] in ("ERROR", "CRITICAL")) or line.startswith("Traceback"):
                scan.error_count += 1
                if len(scan.errors) < limit:
                    scan.errors.append(line.rstrip()[:300])
            elif " access [" in line and (match := _ACCESS.search(line)):
                command, status, ms = match.groups()
                scan.durations_ms.setdefault(command, []).append(float(ms))
                scan.statuses.setdefault(command, Counter())[int(status)] += 1
    return scan


def run_soak(
    stack: SoakStack,
    wrk: str,
    kinds: Sequence[Kind] | None = None,
    say: Say = print,
    options: SoakOptions | None = None,
) -> SoakReport:
    """The warm-up and the windows, then the jobs and the log checked; the proxy keeps running.
    ``kinds`` and ``options`` (its load: connections, durations, think time) default to the stack's."""
    proxy = _proxy(stack)
    opts = options or stack.options
    kinds = list(kinds if kinds is not None else stack.kinds)
    script = stack.work_dir / f"soak-{stack._runs + 1}.lua"
    script.write_text(lua_script(kinds, opts.connections, RAMP_MS, opts.think_ms))
    plan = [("warm-up", opts.warmup)] if opts.warmup > 0 else []
    plan += [("soak", min(opts.window, opts.duration - i * opts.window)) for i in range(opts.windows)]
    windows: list[Window] = []
    soak_start = time.monotonic()
    for index, (phase, seconds) in enumerate(plan, start=1):
        window = run_window(wrk, script, stack, index, phase, seconds, soak_start, stack.next_label(), opts)
        windows.append(window)
        say(
            f"window {index}/{len(plan)} {phase:8} {window.rps:>7,.0f} req/s  p99 {window.p99_ms:7.2f} ms  "
            f"errors {window.errors}  RSS {window.rss_end_mib:.1f} MiB  proxy CPU {window.proxy_cpu_pct:.0f}%"
        )
        if window.wrk_failure:
            say(f"  stopping: {window.wrk_failure}")
            break
    report = SoakReport(opts, windows, kinds)
    if proxy.popen.poll() is None:
        accepted = sum(w.kinds.get("delay", [0, 0])[0] - w.kinds.get("delay", [0, 0])[1] for w in windows)
        report.jobs = check_jobs(stack, accepted) if any(k.name == "delay" for k in kinds) else {}
        # The access lines are written in batches within 0.1 s; let the last ones land.
        time.sleep(0.3)
    scan = scan_log(proxy.log_path)
    report.log_error_count, report.log_errors, report.access = scan.error_count, scan.errors, scan.commands()
    return report


def main(options: SoakOptions, output: Path, allow_install: bool = True, say: Say = print) -> int:
    """``python -m bench --soak``: the soak, its report printed and written to ``output``."""
    wrk, note = ensure_wrk(allow_install=allow_install)
    if note:
        say(note)
    if wrk is None:
        say(f"the soak needs wrk: {note}")
        return 1
    warmup = f"{options.warmup} s warm-up + " if options.warmup else ""
    say(
        f"soak: {options.connections} connections (think time {options.think_ms} ms on average) for "
        f"{warmup}{options.duration} s in windows of {options.window} s against one proxy process"
    )
    with tempfile.TemporaryDirectory(prefix="bench-soak-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            with Procs(tmp) as procs, SoakStack(procs, tmp, options, say) as stack:
                report = run_soak(stack, wrk, say=say)
                report.meta = {
                    **machine(),
                    "wrk": wrk,
                    "proxy": " ".join(["python" if a == PYTHON else a for a in PROXY_ARGV]),
                }
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            say(f"\nsoak failed: {exc}")
            return 1
        except KeyboardInterrupt:
            say("\ninterrupted; every process the soak started has been stopped")
            return 130
    say("\n" + report.text())
    report.write_json(output)
    say(f"\nresults written to {output}")
    return 1 if report.failed else 0


def sabotaged(kinds: Sequence[Kind], name: str) -> list[Kind]:
    """``kinds`` with ``name`` expecting 200 (what it never gets): a soak that must report errors."""
    return [replace(kind, status=200) if kind.name == name else kind for kind in kinds]

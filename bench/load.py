"""Load generators: wrk for HTTP (a Python fallback when wrk cannot be had) and a grpc.aio client.

Each one runs in its own process, so it never shares a CPU with the bench's bookkeeping,
and reports the same thing: completed requests, elapsed time, p50/p99 latency, errors,
and the CPU time the generator itself used (from the reaped child's rusage).
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from bench.procs import PYTHON, ROOT

__all__ = [
    "RESULT_PREFIX",
    "HttpLoad",
    "LoadResult",
    "PyLoad",
    "Wrk",
    "ensure_wrk",
    "percentile",
    "run_grpc",
    "run_jobs",
]

RESULT_PREFIX = "BENCH_RESULT "


@dataclass(frozen=True)
class LoadResult:
    """One load run at a fixed number of connections (or in-flight calls)."""

    requests: int
    duration_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu_s: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "rps": round(self.rps, 1)}


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0.0
    rank = max(0, min(len(sorted_values) - 1, round(pct / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[rank]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run_child(argv: list[str], timeout: float) -> tuple[str, float]:
    """Runs a load generator to completion: its stdout and the CPU seconds it used."""
    before = _children_cpu()
    done = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
    )
    cpu = _children_cpu() - before
    if done.returncode != 0:
        msg = f"{argv[0]} exited with {done.returncode}:\n{done.stdout}\n{done.stderr}"
        raise RuntimeError(msg)
    return done.stdout, cpu


def _parse_json_result(stdout: str, cpu: float) -> LoadResult:
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            data = json.loads(line.removeprefix(RESULT_PREFIX))
            return LoadResult(
                requests=int(data["requests"]),
                duration_s=float(data["duration_s"]),
                p50_ms=float(data["p50_ms"]),
                p99_ms=float(data["p99_ms"]),
                errors=int(data["errors"]),
                client_cpu_s=cpu,
            )
    msg = f"no result line in the load generator's output:\n{stdout}"
    raise RuntimeError(msg)


class HttpLoad(Protocol):
    name: str

    def run(
        self, url: str, method: str, body: bytes | None, connections: int, duration: float
    ) -> LoadResult: ...


_LUA = """\
wrk.method = "{method}"
{body}
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH_WRK %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f %.0f\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
"""


def _lua_long_string(data: bytes) -> str:
    text = data.decode()
    level = 0
    while "]" + "=" * level + "]" in text:
        level += 1
    eq = "=" * level
    if text.startswith("\n"):  # a long string drops a newline right after its opening bracket
        text = "\n" + text
    return f"[{eq}[{text}]{eq}]"


class Wrk:
    """``wrk -t1 -c<N> -d<S>s`` with a Lua script that sets the request and prints the summary."""

    name = "wrk"

    def __init__(self, path: str, script_dir: Path) -> None:
        self.path = path
        self.script_dir = script_dir
        self._scripts: dict[tuple[str, bytes | None], Path] = {}

    def version(self) -> str:
        done = subprocess.run([self.path, "-v"], capture_output=True, text=True, check=False)
        first = (done.stdout or done.stderr).strip().splitlines()
        return first[0].split(" Copyright")[0] if first else "wrk"

    def _script(self, method: str, body: bytes | None) -> Path:
        key = (method, body)
        if key not in self._scripts:
            body_line = f"wrk.body = {_lua_long_string(body)}" if body is not None else ""
            path = self.script_dir / f"wrk-{len(self._scripts)}.lua"
            path.write_text(_LUA.format(method=method, body=body_line))
            self._scripts[key] = path
        return self._scripts[key]

    def run(self, url: str, method: str, body: bytes | None, connections: int, duration: float) -> LoadResult:
        script = self._script(method, body)
        argv = [
            self.path,
            "-t1",
            f"-c{connections}",
            f"-d{duration:g}s",
            "--timeout",
            "10s",
            "-s",
            str(script),
            url,
        ]
        stdout, cpu = _run_child(argv, timeout=duration + 60)
        for line in stdout.splitlines():
            if line.startswith("BENCH_WRK "):
                requests, duration_us, p50, p99, *errors = (int(float(x)) for x in line.split()[1:])
                return LoadResult(
                    requests=requests,
                    duration_s=duration_us / 1e6,
                    p50_ms=p50 / 1000,
                    p99_ms=p99 / 1000,
                    errors=sum(errors),
                    client_cpu_s=cpu,
                )
        msg = f"no summary in wrk's output:\n{stdout}"
        raise RuntimeError(msg)


class PyLoad:
    """The fallback HTTP load generator (``python -m bench.pyload``): much slower than wrk."""

    name = "python (bench.pyload; wrk unavailable)"

    def run(self, url: str, method: str, body: bytes | None, connections: int, duration: float) -> LoadResult:
        argv = [PYTHON, "-m", "bench.pyload", "--url", url, "--method", method]
        argv += ["-c", str(connections), "-d", f"{duration:g}"]
        if body is not None:
            argv += ["--body", body.decode()]
        stdout, cpu = _run_child(argv, timeout=duration + 60)
        return _parse_json_result(stdout, cpu)


def run_grpc(target: str, concurrency: int, duration: float, message: str) -> LoadResult:
    """``ExampleService/Example`` over one grpc.aio channel with ``concurrency`` calls in flight."""
    argv = [PYTHON, "-m", "bench.grpc_load", "--target", target]
    argv += ["-c", str(concurrency), "-d", f"{duration:g}", "--message", message]
    stdout, cpu = _run_child(argv, timeout=duration + 60)
    return _parse_json_result(stdout, cpu)


def run_jobs(
    port: int, receiver_port: int, connections: int, duration: float, latency_duration: float
) -> dict[str, Any]:
    """``python -m bench.jobs_load`` against the proxy on ``port``: its result (see that module).

    The callback URLs it sends name the receiver on ``receiver_port``.
    """
    argv = [PYTHON, "-m", "bench.jobs_load", "--port", str(port), "--receiver-port", str(receiver_port)]
    argv += ["--callback-base", f"http://127.0.0.1:{receiver_port}", "-c", str(connections)]
    argv += ["-d", f"{duration:g}", "--latency-duration", f"{latency_duration:g}"]
    # The drain gives up after 30 s without a callback; whatever it waits for before that counts.
    stdout, _ = _run_child(argv, timeout=duration + latency_duration + 600)
    for line in stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            result: dict[str, Any] = json.loads(line.removeprefix(RESULT_PREFIX))
            return result
    msg = f"no result line in the jobs load generator's output:\n{stdout}"
    raise RuntimeError(msg)


def ensure_wrk(allow_install: bool = True) -> tuple[str | None, str]:
    """Finds wrk, installing the Debian package when missing and running as root.

    Returns:
        wrk's path (None when it cannot be had) and a note saying what happened.
    """
    found = shutil.which("wrk")
    if found:
        return found, ""
    if not allow_install:
        return None, "wrk is not installed (install it with: apt-get install wrk)"
    if os.geteuid() != 0:
        return (
            None,
            "wrk is not installed and the bench is not root; install it with: sudo apt-get install wrk",
        )
    print("wrk is missing; installing it: apt-get install -y wrk", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "wrk"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
        done = subprocess.run(install, capture_output=True, text=True, env=env, check=False)
    found = shutil.which("wrk")
    if found:
        return found, "installed wrk with apt-get"
    tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-5:])
    return None, f"apt-get install -y wrk failed:\n{tail}"

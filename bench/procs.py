"""The processes under test: free ports, process groups, readiness, CPU time and RSS."""

from __future__ import annotations

import contextlib
import datetime
import http.client
import os
import platform
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = [
    "GRPC_SERVER_ARGV",
    "PROXY_ARGV",
    "PYTHON",
    "ROOT",
    "SHIM_ARGV",
    "WORKER_ARGV",
    "Proc",
    "Procs",
    "clean_env",
    "cpu_seconds",
    "free_ports",
    "http_request",
    "machine",
    "rss_mib",
]

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


def machine() -> dict[str, object]:
    """When and where a run was made, for its results' ``meta``."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
    }


# The command lines of the project's own processes: the bench starts them from here and nowhere
# else, so a moved entry point is a change of these lines only.
PROXY_ARGV: tuple[str, ...] = (PYTHON, "-m", "connector_proxy")  # embedded: REST + gRPC, one process
GRPC_SERVER_ARGV: tuple[str, ...] = (*PROXY_ARGV, "--grpc-only")  # the gRPC server alone
SHIM_ARGV: tuple[str, ...] = (*PROXY_ARGV, "--shim-only")  # the REST shim alone (GRPC_TARGETS)
WORKER_ARGV: tuple[str, ...] = (*PROXY_ARGV, "--worker")  # scale-out job worker processes

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago (all bound at once, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any ``CONNECTOR_PROXY_*`` setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONNECTOR_PROXY_")}
    env.update(extra)
    return env


def http_request(
    port: int, method: str, path: str, body: bytes | None = None, timeout: float = 10.0
) -> tuple[int, bytes]:
    """One request on a fresh connection to 127.0.0.1: the status and the body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def rss_mib(pid: int) -> float:
    """The resident set size of ``pid`` (VmRSS in /proc/<pid>/status), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    msg = f"no VmRSS for process {pid}"
    raise RuntimeError(msg)


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time that ``pid`` has used so far (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


@dataclass
class Proc:
    """A process that the bench started as the leader of its own process group."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, port: int, path: str = "/liveness", timeout: float = 20.0) -> float:
        """Polls ``GET path`` until it answers 200; returns seconds since the spawn.

        Raises:
            RuntimeError: the process exited, or did not answer 200 within ``timeout``.
        """
        deadline = self.started_at + timeout
        while True:
            if self.popen.poll() is not None:
                msg = f"{self.name} exited with code {self.popen.returncode}; its log:\n{self.log_tail()}"
                raise RuntimeError(msg)
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, _ = http_request(port, "GET", path, timeout=1.0)
                if status == 200:
                    return time.perf_counter() - self.started_at
            if time.perf_counter() > deadline:
                msg = f"{self.name} gave no 200 on {path} within {timeout:g} s; its log:\n{self.log_tail()}"
                raise RuntimeError(msg)
            time.sleep(0.005)

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM to the process group, SIGKILL after ``timeout``; reaps the leader."""
        pgid = self.popen.pid
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.popen.wait(timeout)
        # Anything the leader left behind in its group goes too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


class Procs:
    """Starts processes in their own process groups and stops every one of them on exit."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.running: list[Proc] = []
        self._count = 0

    def start(self, name: str, argv: Sequence[str], env: Mapping[str, str]) -> Proc:
        self._count += 1
        log_path = self.log_dir / f"{self._count:02d}-{name}.log"
        with log_path.open("wb") as log:
            started_at = time.perf_counter()
            popen = subprocess.Popen(
                list(argv),
                cwd=ROOT,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = Proc(name, popen, log_path, started_at)
        self.running.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        try:
            proc.stop()
        finally:
            if proc in self.running:
                self.running.remove(proc)

    def stop_all(self) -> None:
        errors: list[BaseException] = []
        for proc in reversed(list(self.running)):
            try:
                self.stop(proc)
            except BaseException as exc:  # keep stopping the others
                errors.append(exc)
        if errors:
            raise errors[0]

    def __enter__(self) -> Procs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop_all()

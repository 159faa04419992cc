"""The benchmark run: start the systems, measure them in interleaved rounds, report, stop them."""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from bench.apps import TARGET_BODY
from bench.envoy import CONCURRENCY as ENVOY_CONCURRENCY
from bench.jobs import DEFAULT_BROKER_URL, DEFAULT_REDIS_URL, JobsOptions, measure_jobs
from bench.jobs_report import JobsReport
from bench.load import HttpLoad, LoadResult, PyLoad, Wrk, ensure_wrk, run_grpc
from bench.procs import (
    GRPC_SERVER_ARGV,
    PROXY_ARGV,
    PYTHON,
    ROOT,
    SHIM_ARGV,
    Proc,
    Procs,
    clean_env,
    cpu_seconds,
    free_ports,
    http_request,
    machine,
    rss_mib,
)
from bench.remote import RemoteSystems, envoy_path, start_remote_systems
from bench.report import ENVOY, REMOTE, Report, Scenario, ScenarioRuns
from bench.soak import DEFAULT_MYSQL, DEFAULT_POSTGRES, SOAK_RESULTS, SoakOptions, main as soak_main

__all__ = ["main"]

DO_EXAMPLE_BODY = b'{"message":"hi"}'
HTTP_COMMAND = "http/GetRequestV2"
TYPEAHEAD_PATH = "/v1/typeahead/cities?prefix=san&limit=100"
RESULTS = Path(__file__).resolve().parent / "results" / "latest.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmarks the embedded proxy against a bare-Starlette floor, and the REST shim "
        "in front of a gRPC server against Envoy's gRPC-JSON transcoder, in interleaved rounds, "
        "then long-running jobs in the embedded and the broker job modes.",
    )
    parser.add_argument("--duration", type=int, default=3, help="whole seconds of each load run (default 3)")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; medians are reported (default 3)"
    )
    parser.add_argument(
        "--connections", type=int, default=16, help="connections / in-flight calls (default 16)"
    )
    parser.add_argument(
        "--warmup", type=int, default=1, help="whole seconds of warm-up per scenario, 0 for none (default 1)"
    )
    parser.add_argument("--starts", type=int, default=3, help="start-ups timed per system (default 3)")
    parser.add_argument(
        "--loadgen",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="auto: wrk, installed with apt-get when missing (as root), else the Python fallback",
    )
    parser.add_argument("--no-install", action="store_true", help="never run apt-get to install wrk")
    parser.add_argument(
        "--remote-only",
        action="store_true",
        help="only POST /v1/do/example/Example on the embedded proxy, the remote shim and Envoy "
        "(no floor, no other scenario, no start-up timing, no jobs)",
    )
    parser.add_argument(
        "--no-jobs",
        action="store_true",
        help="skip the jobs benchmark (long-running commands, both job modes)",
    )
    parser.add_argument(
        "--no-broker",
        action="store_true",
        help="jobs in the embedded mode only (the broker mode is skipped anyway when RabbitMQ or Redis "
        "is not reachable)",
    )
    parser.add_argument(
        "--jobs-broker-url",
        default=DEFAULT_BROKER_URL,
        help=f"RabbitMQ for the broker mode (default {DEFAULT_BROKER_URL})",
    )
    parser.add_argument(
        "--jobs-redis-url",
        default=DEFAULT_REDIS_URL,
        help=f"Redis for the broker mode (default {DEFAULT_REDIS_URL})",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help=f"JSON results (default {RESULTS}; {SOAK_RESULTS} with --soak)",
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target fails")
    soak = parser.add_argument_group(
        "soak",
        "--soak runs the soak instead of the benchmark (bench.soak): one proxy under a mix of every "
        "local command and malformed input; exit 1 on any error or when its RSS grows",
    )
    soak.add_argument("--soak", action="store_true", help="run the soak instead of the benchmark")
    soak.add_argument(
        "--soak-duration", type=int, default=600, help="seconds of load after the warm-up (default 600)"
    )
    soak.add_argument("--soak-connections", type=int, default=64, help="clients (default 64)")
    soak.add_argument(
        "--soak-window", type=int, default=30, help="seconds per window: one wrk run, one row (default 30)"
    )
    soak.add_argument(
        "--soak-warmup", type=int, default=30, help="seconds of load before the first window (default 30)"
    )
    soak.add_argument(
        "--soak-rss-tolerance",
        type=float,
        default=SoakOptions.rss_tolerance_mib,
        help="MiB the RSS may grow from the first window to the last ones "
        f"(default {SoakOptions.rss_tolerance_mib:g})",
    )
    soak.add_argument(
        "--soak-think-ms",
        type=int,
        default=SoakOptions.think_ms,
        help="each client's mean wait before a request, uniform from 0 to twice this; 0 for back to back, "
        f"which saturates the proxy (default {SoakOptions.think_ms})",
    )
    soak.add_argument("--soak-postgres", default=DEFAULT_POSTGRES, help=f"(default {DEFAULT_POSTGRES!r})")
    soak.add_argument("--soak-mysql", default=DEFAULT_MYSQL, help=f"(default {DEFAULT_MYSQL!r})")
    args = parser.parse_args(argv)
    if args.soak:
        if (
            min(args.soak_duration, args.soak_window, args.soak_connections) < 1
            or min(args.soak_warmup, args.soak_think_ms) < 0
        ):
            parser.error(
                "--soak-duration, --soak-window and --soak-connections must be at least 1, "
                "--soak-warmup and --soak-think-ms at least 0"
            )
        return args
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1 or args.connections < 1 or args.starts < 1:
        parser.error(
            "--duration, --rounds, --connections and --starts must be at least 1, --warmup at least 0"
        )
    return args


def _say(text: str) -> None:
    print(text, flush=True)


def proxy_env(port: int, grpc_port: int) -> dict[str, str]:
    return clean_env(
        {
            "CONNECTOR_PROXY_HOST": "127.0.0.1",
            "CONNECTOR_PROXY_PORT": str(port),
            "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port),
            "CONNECTOR_PROXY_SHUTDOWN_GRACE": "1",
        }
    )


# The proxy with metrics and logs off, and with metrics and JSON logs on (the default is metrics and
# plain logs): what observability costs the hot path.
QUIET_ENV = {"CONNECTOR_PROXY_METRICS": "false", "CONNECTOR_PROXY_ACCESS_LOG": "false"}
OBSERVED_ENV = {"CONNECTOR_PROXY_LOG_FORMAT": "json"}


def start_proxy(
    procs: Procs, name: str = "proxy", extra_env: dict[str, str] | None = None
) -> tuple[Proc, int, int]:
    port, grpc_port = free_ports(2)
    # Each proxy gets its own job store in the run's temporary directory (one process owns a store).
    jobs_db = procs.log_dir / f"{name}-{port}-jobs.sqlite3"
    env = {**proxy_env(port, grpc_port), "CONNECTOR_PROXY_JOBS_DB": str(jobs_db), **(extra_env or {})}
    proc = procs.start(name, PROXY_ARGV, env)
    return proc, port, grpc_port


def start_floor(procs: Procs, do_body: Path, commands_body: Path, name: str = "floor") -> tuple[Proc, int]:
    (port,) = free_ports(1)
    argv = [PYTHON, "-m", "bench.apps", "floor", "--port", str(port)]
    argv += ["--do-body", str(do_body), "--commands-body", str(commands_body)]
    return procs.start(name, argv, clean_env({})), port


def start_target(procs: Procs) -> tuple[Proc, int]:
    (port,) = free_ports(1)
    argv = [PYTHON, "-m", "bench.apps", "target", "--port", str(port)]
    return procs.start("target", argv, clean_env({})), port


def time_startups(procs: Procs, count: int, start: Callable[[], tuple[Proc, int]]) -> list[float]:
    """Spawn to first 200 from ``/liveness``, ``count`` times, stopping each process after."""
    samples = []
    for _ in range(count):
        proc, port = start()
        try:
            samples.append(proc.wait_ready(port))
        finally:
            procs.stop(proc)
    return samples


def probe(port: int, method: str, path: str, body: bytes | None = None) -> bytes:
    status, reply = http_request(port, method, path, body)
    if status != 200:
        msg = f"{method} {path} answered {status}: {reply[:500]!r}"
        raise RuntimeError(msg)
    return reply


def check_http_connector(proxy_port: int, commands_body: bytes, target_port: int) -> tuple[bytes | None, str]:
    """The body of the http scenario when ``http/GetRequestV2`` works, else None and why not."""
    ids = {command.get("id") for command in json.loads(commands_body)}
    if HTTP_COMMAND not in ids:
        return None, f"the proxy does not offer {HTTP_COMMAND}"
    body = json.dumps({"url": f"http://127.0.0.1:{target_port}/json"}).encode()
    status, reply = http_request(proxy_port, "POST", f"/v1/do/{HTTP_COMMAND}", body)
    if status != 200:
        return None, f"{HTTP_COMMAND} answered {status} to a probe: {reply[:300]!r}"
    try:
        got = json.loads(reply)["command_response"]["body"]
    except (ValueError, KeyError, TypeError):
        return None, f"{HTTP_COMMAND} answered an unexpected envelope: {reply[:300]!r}"
    if got != json.loads(TARGET_BODY):
        return None, f"{HTTP_COMMAND} returned {got!r}, not the target's JSON body"
    return body, ""


def check_typeahead(proxy_port: int) -> str:
    """Why the typeahead scenario cannot run, or "" when ``GET {TYPEAHEAD_PATH}`` answers 100 cities.

    The probe is also the cities index's first use, which builds it (about a second).
    """
    status, reply = http_request(proxy_port, "GET", TYPEAHEAD_PATH, timeout=30.0)
    if status != 200:
        return f"GET {TYPEAHEAD_PATH} answered {status} to a probe: {reply[:300]!r}"
    try:
        results = json.loads(reply)
    except ValueError:
        return f"GET {TYPEAHEAD_PATH} answered something that is not JSON: {reply[:300]!r}"
    if not isinstance(results, list) or len(results) != 100:
        return f"GET {TYPEAHEAD_PATH} did not answer 100 cities: {reply[:300]!r}"
    return ""


def remote_scenarios(envoy: bool) -> list[Scenario]:
    """``example/Example`` through the REST shim in front of the gRPC server, and through Envoy's
    transcoder in front of the same server (see bench.remote)."""
    remote = Scenario(
        REMOTE,
        "remote: REST shim + gRPC server POST /v1/do/example/Example",
        "remote",
        method="POST",
        path="/v1/do/example/Example",
        body=DO_EXAMPLE_BODY,
        baseline="floor_do",
    )
    if not envoy:
        return [remote]
    return [
        remote,
        Scenario(
            ENVOY,
            "envoy: transcoder + gRPC server POST ExampleService/Example",
            "envoy",
            method="POST",
            path=envoy_path(),
            body=DO_EXAMPLE_BODY,
            baseline="floor_do",
        ),
    ]


def embedded_do_example() -> Scenario:
    return Scenario(
        "do_example",
        "proxy POST /v1/do/example/Example",
        "proxy",
        method="POST",
        path="/v1/do/example/Example",
        body=DO_EXAMPLE_BODY,
        baseline="floor_do",
    )


def observability_scenarios() -> list[Scenario]:
    """``example/Example`` on the proxy with metrics and logs off, then with metrics and JSON logs
    (one access line per call) on: measured as neighbours, their ratio is what observability costs."""
    return [
        Scenario(
            "do_quiet",
            "proxy, metrics+logs off POST /v1/do/example/Example",
            "quiet",
            method="POST",
            path="/v1/do/example/Example",
            body=DO_EXAMPLE_BODY,
            baseline="floor_do",
        ),
        Scenario(
            "do_observed",
            "proxy, metrics+JSON logs POST /v1/do/example/Example",
            "observed",
            method="POST",
            path="/v1/do/example/Example",
            body=DO_EXAMPLE_BODY,
            baseline="floor_do",
        ),
    ]


def scenario_groups(
    http_body: bytes | None, typeahead: bool = False, remote: Sequence[Scenario] = ()
) -> list[list[Scenario]]:
    """The scenarios, in groups measured back to back so that each ratio compares neighbours;
    the remote ones (``remote_scenarios``) next to the embedded ``/v1/do`` and its floor."""
    floor_do, floor_commands, do_example, commands = [
        Scenario(
            "floor_do",
            "floor POST /v1/do (bare Starlette)",
            "floor",
            method="POST",
            path="/v1/do/example/Example",
            body=DO_EXAMPLE_BODY,
        ),
        Scenario("floor_commands", "floor GET /v1/commands (bare Starlette)", "floor", path="/v1/commands"),
        embedded_do_example(),
        Scenario(
            "commands", "proxy GET /v1/commands", "proxy", path="/v1/commands", baseline="floor_commands"
        ),
    ]
    groups = [[floor_do, do_example, *remote], observability_scenarios(), [floor_commands, commands]]
    if http_body is not None:
        do_http = Scenario(
            "do_http",
            f"proxy POST /v1/do/{HTTP_COMMAND}",
            "proxy",
            method="POST",
            path=f"/v1/do/{HTTP_COMMAND}",
            body=http_body,
            baseline="floor_do",
        )
        groups.append([do_http, Scenario("target", "  target GET /json (alone)", "target", path="/json")])
    if typeahead:
        groups.append(
            [Scenario("typeahead", "proxy GET /v1/typeahead/cities?prefix=san", "proxy", path=TYPEAHEAD_PATH)]
        )
    groups.append(
        [Scenario("grpc", "gRPC ExampleService/Example (direct)", "proxy", kind="grpc", baseline="floor_do")]
    )
    return groups


class Runner:
    """Runs one scenario at a given concurrency, reading its serving processes' CPU time around it.

    ``pids`` maps each system to its serving processes by name: one for the embedded proxy,
    the shim and the gRPC server for the remote path, Envoy and the same gRPC server for Envoy.
    """

    def __init__(
        self, load: HttpLoad, pids: dict[str, dict[str, int]], ports: dict[str, int], grpc_target: str
    ) -> None:
        self.load = load
        self.pids = pids
        self.ports = ports
        self.grpc_target = grpc_target

    def measure(
        self, scenario: Scenario, connections: int, duration: float
    ) -> tuple[LoadResult, dict[str, float]]:
        pids = self.pids[scenario.system]
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        if scenario.kind == "grpc":
            result = run_grpc(self.grpc_target, connections, duration, "hi")
        else:
            url = f"http://127.0.0.1:{self.ports[scenario.system]}{scenario.path}"
            result = self.load.run(url, scenario.method, scenario.body, connections, duration)
        return result, {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}


def choose_loadgen(args: argparse.Namespace, script_dir: Path, notes: list[str]) -> tuple[HttpLoad, str]:
    if args.loadgen == "python":
        notes.append(
            "HTTP load from the Python fallback (--loadgen python): numbers are client-bound lower bounds"
        )
        return PyLoad(), "python fallback (forced)"
    path, note = ensure_wrk(allow_install=not args.no_install)
    if note:
        _say(note)
    if path is not None:
        wrk = Wrk(path, script_dir)
        return wrk, wrk.version()
    if args.loadgen == "wrk":
        msg = f"wrk is required (--loadgen wrk) but unavailable: {note}"
        raise RuntimeError(msg)
    warning = (
        f"WARNING: wrk is unavailable ({note.splitlines()[0]}); using the Python load generator, "
        "which saturates its own core first: req/s are lower bounds and ratios are flattened."
    )
    _say(warning)
    notes.append(warning)
    return PyLoad(), "python fallback (wrk unavailable)"


def measure(args: argparse.Namespace, procs: Procs, tmp: Path) -> Report:
    notes: list[str] = []
    load, loadgen = choose_loadgen(args, tmp, notes)
    # The embedded /v1/do, the remote shim and Envoy; unless --remote-only, also the two floors,
    # /v1/commands, the http connector's two, the typeahead one and direct gRPC.
    n_scenarios = 3 if args.remote_only else 12
    per_round = n_scenarios * 2 * args.duration
    estimate = args.rounds * per_round + n_scenarios * args.warmup + 15
    _say(
        f"load generator: {loadgen}; {args.rounds} rounds x {n_scenarios} scenarios "
        f"x 2 runs of {args.duration:g} s"
    )
    jobs_wanted = not (args.no_jobs or args.remote_only)
    if jobs_wanted:
        # Per mode and round: the latency phase, the burst, and its drain (about as long again).
        job_modes = 1 if args.no_broker else 2
        estimate += job_modes * (args.rounds * 4 * args.duration + 3 * args.warmup) + 15
    _say(f"this takes about {estimate / 60:.1f} min\n")

    do_file = tmp / "do.json"
    commands_file = tmp / "commands.json"
    do_file.write_bytes(b"{}")
    commands_file.write_bytes(b"[]")

    startup: dict[str, list[float]] = {}
    if not args.remote_only:
        _say(f"timing start-ups ({args.starts} each)...")
        startup = {
            "proxy": time_startups(procs, args.starts, lambda: _proxy_http(procs)),
            "bare Starlette floor": time_startups(
                procs, args.starts, lambda: start_floor(procs, do_file, commands_file, "floor-start")
            ),
        }

    proxy, proxy_port, grpc_port = start_proxy(procs)
    proxy.wait_ready(proxy_port)
    do_body = probe(proxy_port, "POST", "/v1/do/example/Example", DO_EXAMPLE_BODY)
    remote = _start_remote(procs, tmp, do_body)
    skipped: dict[str, str] = {}
    if "envoy" in remote.skipped:
        skipped["envoy: transcoder + gRPC server"] = remote.skipped["envoy"]
        _say(f"SKIP the Envoy scenario: {remote.skipped['envoy']}")
    remote_plan = remote_scenarios(envoy=remote.envoy is not None)
    pids: dict[str, dict[str, int]] = {"proxy": {"proxy": proxy.pid}, **remote.pids()}
    ports: dict[str, int] = {"proxy": proxy_port, **remote.ports()}

    if args.remote_only:
        groups = [[embedded_do_example(), *remote_plan]]
    else:
        target, target_port = start_target(procs)
        target.wait_ready(target_port)
        commands_body = probe(proxy_port, "GET", "/v1/commands")
        do_file.write_bytes(do_body)
        commands_file.write_bytes(commands_body)
        floor, floor_port = start_floor(procs, do_file, commands_file)
        floor.wait_ready(floor_port)
        if probe(floor_port, "POST", "/v1/do/example/Example", DO_EXAMPLE_BODY) != do_body:
            msg = "the floor's POST reply differs from the proxy's"
            raise RuntimeError(msg)
        if probe(floor_port, "GET", "/v1/commands") != commands_body:
            msg = "the floor's /v1/commands reply differs from the proxy's"
            raise RuntimeError(msg)
        pids |= {"floor": {"floor": floor.pid}, "target": {"target": target.pid}}
        ports |= {"floor": floor_port, "target": target_port}
        for system, extra_env in (("quiet", QUIET_ENV), ("observed", OBSERVED_ENV)):
            variant, variant_port, _ = start_proxy(procs, system, extra_env)
            variant.wait_ready(variant_port)
            if probe(variant_port, "POST", "/v1/do/example/Example", DO_EXAMPLE_BODY) != do_body:
                msg = f"the {system} proxy's POST reply differs from the proxy's"
                raise RuntimeError(msg)
            pids[system], ports[system] = {system: variant.pid}, variant_port

        http_body, why = check_http_connector(proxy_port, commands_body, target_port)
        if http_body is None:
            skipped[f"proxy POST /v1/do/{HTTP_COMMAND}"] = why
            _say(f"SKIP the http scenario: {why}")

        typeahead_skip = check_typeahead(proxy_port)
        if typeahead_skip:
            skipped[f"proxy GET {TYPEAHEAD_PATH}"] = typeahead_skip
            _say(f"SKIP the typeahead scenario: {typeahead_skip}")
        groups = scenario_groups(http_body, typeahead=not typeahead_skip, remote=remote_plan)

    plan = [scenario for group in groups for scenario in group]
    runner = Runner(load, pids, ports, f"127.0.0.1:{grpc_port}")
    runs = {s.key: ScenarioRuns(s) for s in plan}

    if args.warmup > 0:
        _say(f"warming up ({args.warmup:g} s per scenario)...")
        for scenario in plan:
            runner.measure(scenario, args.connections, args.warmup)
    time.sleep(1.0)
    idle_rss = rss_mib(proxy.pid)

    for round_index in range(args.rounds):
        # Rotate the groups and flip the order inside each one from round to round.
        shift = round_index % len(groups)
        for group in groups[shift:] + groups[:shift]:
            members = group if round_index % 2 == 0 else group[::-1]
            for scenario in members:
                many, cpu = runner.measure(scenario, args.connections, args.duration)
                runs[scenario.key].many.append(many)
                runs[scenario.key].server_cpu_s.append(sum(cpu.values()))
                runs[scenario.key].process_cpu_s.append(cpu)
            for scenario in members:
                one, _ = runner.measure(scenario, 1, args.duration)
                runs[scenario.key].one.append(one)
            for scenario in members:
                many, one = runs[scenario.key].many[-1], runs[scenario.key].one[-1]
                errors = f"  ERRORS {many.errors + one.errors}" if many.errors or one.errors else ""
                _say(
                    f"round {round_index + 1}/{args.rounds}  {scenario.label.strip():60}  "
                    f"{many.rps:>9,.0f} req/s   c=1 p50 {one.p50_ms:.2f} ms  p99 {one.p99_ms:.2f} ms{errors}"
                )
    time.sleep(0.5)
    rss_after = rss_mib(proxy.pid)
    jobs = _measure_jobs(args, procs) if jobs_wanted else None

    if any(r.errors for r in runs.values()):
        notes.append("some runs had errors (non-2xx, timeouts or socket errors); see the errors column")
    meta: dict[str, Any] = {
        **machine(),
        "loadgen": loadgen,
        "connections": args.connections,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "warmup_s": args.warmup,
        "method": "medians of interleaved rounds; ratio = median of the per-round req/s ratios to the floor",
        "remote_only": args.remote_only,
        "commands": {
            "proxy": _argv_text(PROXY_ARGV),
            "grpc_server": _argv_text(GRPC_SERVER_ARGV),
            "shim": _argv_text(SHIM_ARGV),
        },
        "envoy": {"version": remote.envoy_version, "concurrency": ENVOY_CONCURRENCY}
        if remote.envoy is not None
        else None,
    }
    return Report(
        runs=runs,
        connections=args.connections,
        meta=meta,
        skipped=skipped,
        notes=notes,
        idle_rss_mib=idle_rss,
        rss_after_mib=rss_after,
        startup_s=startup,
        jobs=jobs,
    )


def _measure_jobs(args: argparse.Namespace, procs: Procs) -> JobsReport:
    modes = "the embedded mode" if args.no_broker else "the embedded and the broker modes"
    _say(f"\njobs: POST /v1/do/example/Delay in {modes}, {args.rounds} rounds")
    options = JobsOptions(
        connections=args.connections,
        duration=args.duration,
        rounds=args.rounds,
        warmup=args.warmup,
        broker=not args.no_broker,
        broker_url=args.jobs_broker_url,
        redis_url=args.jobs_redis_url,
    )
    return measure_jobs(options, procs, _say)


def _start_remote(procs: Procs, tmp: Path, do_body: bytes) -> RemoteSystems:
    _say("starting the gRPC server alone, the REST shim and Envoy in front of it...")
    remote = start_remote_systems(procs, tmp, "/v1/do/example/Example", DO_EXAMPLE_BODY, do_body)
    if remote.envoy is not None:
        _say(f"envoy {remote.envoy_version}, --concurrency {ENVOY_CONCURRENCY}, grpc_json_transcoder")
    return remote


def _argv_text(argv: Sequence[str]) -> str:
    return " ".join(["python" if arg == PYTHON else arg for arg in argv])


def _proxy_http(procs: Procs) -> tuple[Proc, int]:
    proc, port, _ = start_proxy(procs, "proxy-start")
    return proc, port


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    if args.soak:
        options = SoakOptions(
            connections=args.soak_connections,
            duration=args.soak_duration,
            window=args.soak_window,
            warmup=args.soak_warmup,
            rss_tolerance_mib=args.soak_rss_tolerance,
            think_ms=args.soak_think_ms,
            postgres=args.soak_postgres,
            mysql=args.soak_mysql,
        )
        return soak_main(options, args.output or SOAK_RESULTS, allow_install=not args.no_install, say=_say)
    args.output = args.output or RESULTS
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp_name:
        tmp = Path(tmp_name)
        procs = Procs(tmp)
        try:
            with procs:
                report = measure(args, procs, tmp)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            _say(f"\nbench failed: {exc}")
            return 1
        except KeyboardInterrupt:
            _say("\ninterrupted; every process the bench started has been stopped")
            return 130
        finally:
            if procs.running:  # pragma: no cover - Procs.__exit__ stops them; this is a last resort
                procs.stop_all()
    _say("\n" + report.text())
    report.write_json(args.output)
    _say(f"\nresults written to {_shown(args.output)}")
    return 1 if args.check and report.verdict().failed else 0


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)

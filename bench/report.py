"""Medians, ratios, targets, the printed table and the JSON file."""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.jobs_report import JobsReport
from bench.load import LoadResult

__all__ = ["Report", "Scenario", "ScenarioRuns", "Target", "Verdict"]

# The rows of the remote-path comparison: the embedded proxy (the reference), the REST shim in
# front of a gRPC server, and Envoy's transcoder in front of the same server.
EMBEDDED, REMOTE, ENVOY = "do_example", "remote_do", "envoy_do"


@dataclass(frozen=True)
class Scenario:
    """One thing measured in every round.

    ``system`` names the system under test (the CPU time of its serving processes is read
    around each run); ``baseline`` is the key of the floor scenario that the ratio is taken against.
    """

    key: str
    label: str
    system: str
    kind: str = "http"
    method: str = "GET"
    path: str = ""
    body: bytes | None = None
    baseline: str | None = None


@dataclass
class ScenarioRuns:
    """Every round's results of one scenario."""

    scenario: Scenario
    many: list[LoadResult] = field(default_factory=list)  # at the configured connections
    one: list[LoadResult] = field(default_factory=list)  # at one connection, for latency
    server_cpu_s: list[float] = field(default_factory=list)  # of the ``many`` runs, all serving processes
    process_cpu_s: list[dict[str, float]] = field(default_factory=list)  # the same, per process

    @property
    def rps(self) -> float:
        return statistics.median(r.rps for r in self.many) if self.many else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.one) if self.one else 0.0

    @property
    def p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.one) if self.one else 0.0

    @property
    def spread(self) -> float:
        """(max - min) / median of the rounds' req/s: how much the machine moved."""
        values = [r.rps for r in self.many]
        median = statistics.median(values) if values else 0.0
        return (max(values) - min(values)) / median if median else 0.0

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.many + self.one)

    @property
    def server_us_per_req(self) -> float:
        per = [
            cpu / r.requests * 1e6 for cpu, r in zip(self.server_cpu_s, self.many, strict=True) if r.requests
        ]
        return statistics.median(per) if per else 0.0

    @property
    def process_us_per_req(self) -> dict[str, float]:
        """Each serving process's CPU time per request at many connections (medians of the rounds)."""
        names = dict.fromkeys(name for cpu in self.process_cpu_s for name in cpu)
        return {
            name: statistics.median(
                cpu.get(name, 0.0) / r.requests * 1e6
                for cpu, r in zip(self.process_cpu_s, self.many, strict=True)
                if r.requests
            )
            for name in names
        }

    @property
    def many_p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.many) if self.many else 0.0

    @property
    def many_p99_ms(self) -> float:
        return statistics.median(r.p99_ms for r in self.many) if self.many else 0.0

    def cpu_per_req_ratio_to(self, other: ScenarioRuns) -> float:
        """This row's server CPU per request over ``other``'s (below 1: this one is cheaper)."""
        theirs = other.server_us_per_req
        return self.server_us_per_req / theirs if theirs else 0.0

    @property
    def client_cpu(self) -> float:
        """The load generator's CPU use at many connections, as a fraction of one core."""
        per = [r.client_cpu_s / r.duration_s for r in self.many if r.duration_s]
        return statistics.median(per) if per else 0.0

    def cpu_ratio_to(self, baseline: ScenarioRuns) -> float:
        """The baseline's server CPU per request over this one's: the throughput ratio that CPU
        alone predicts when both servers are CPU-bound, and steadier than req/s on a busy machine."""
        mine = self.server_us_per_req
        return baseline.server_us_per_req / mine if mine else 0.0

    def ratio_to(self, baseline: ScenarioRuns) -> float:
        """Median over rounds of this round's req/s over the baseline's in the same round."""
        pairs = zip(self.many, baseline.many, strict=False)
        ratios = [mine.rps / base.rps for mine, base in pairs if base.rps]
        return statistics.median(ratios) if ratios else 0.0

    def to_json(self, baseline: ScenarioRuns | None) -> dict[str, Any]:
        return {
            "label": self.scenario.label,
            "rps": round(self.rps, 1),
            "p50_ms_c1": round(self.p50_ms, 3),
            "p99_ms_c1": round(self.p99_ms, 3),
            "baseline": self.scenario.baseline,
            "ratio": round(self.ratio_to(baseline), 3) if baseline is not None else None,
            "cpu_ratio": round(self.cpu_ratio_to(baseline), 3) if baseline is not None else None,
            "spread": round(self.spread, 3),
            "server_cpu_us_per_req": round(self.server_us_per_req, 1),
            "process_cpu_us_per_req": {k: round(v, 1) for k, v in self.process_us_per_req.items()},
            "p50_ms_many": round(self.many_p50_ms, 3),
            "p99_ms_many": round(self.many_p99_ms, 3),
            "client_cpu_cores": round(self.client_cpu, 2),
            "errors": self.errors,
            "rounds": {
                "many": [r.to_json() for r in self.many],
                "one": [r.to_json() for r in self.one],
                "server_cpu_s": [round(c, 3) for c in self.server_cpu_s],
                "process_cpu_s": [{k: round(v, 3) for k, v in c.items()} for c in self.process_cpu_s],
            },
        }


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    limit: float
    unit: str
    at_least: bool

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "SKIP"
        ok = self.value >= self.limit if self.at_least else self.value <= self.limit
        return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Verdict:
    targets: tuple[Target, ...]

    @property
    def failed(self) -> bool:
        return any(t.verdict == "FAIL" for t in self.targets)


def _fmt_num(value: float) -> str:
    return f"{value:,.0f}"


def _fmt_ms(value: float) -> str:
    return f"{value:.2f}"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


@dataclass
class Report:
    """Everything one run measured, and how to show it."""

    runs: dict[str, ScenarioRuns]
    connections: int
    meta: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    idle_rss_mib: float | None = None
    rss_after_mib: float | None = None
    startup_s: dict[str, list[float]] = field(default_factory=dict)
    jobs: JobsReport | None = None  # None with --no-jobs

    def baseline(self, runs: ScenarioRuns) -> ScenarioRuns | None:
        key = runs.scenario.baseline
        return self.runs.get(key) if key else None

    def ratio(self, key: str) -> float | None:
        runs = self.runs.get(key)
        if runs is None or not runs.many:
            return None
        base = self.baseline(runs)
        return runs.ratio_to(base) if base is not None else None

    def p50(self, key: str) -> float | None:
        runs = self.runs.get(key)
        return runs.p50_ms if runs is not None and runs.one else None

    def _measured(self, key: str) -> ScenarioRuns | None:
        runs = self.runs.get(key)
        return runs if runs is not None and runs.many else None

    def rps_ratio(self, key: str, other: str) -> float | None:
        """Median of the per-round req/s ratios of ``key`` to ``other`` (None unless both ran)."""
        mine, theirs = self._measured(key), self._measured(other)
        return mine.ratio_to(theirs) if mine is not None and theirs is not None else None

    def cpu_ratio(self, key: str, other: str) -> float | None:
        """``key``'s server CPU per request over ``other``'s (None unless both ran)."""
        mine, theirs = self._measured(key), self._measured(other)
        return mine.cpu_per_req_ratio_to(theirs) if mine is not None and theirs is not None else None

    def startup_median(self, system: str) -> float | None:
        samples = self.startup_s.get(system)
        return statistics.median(samples) if samples else None

    def verdict(self) -> Verdict:
        return Verdict(
            (
                Target("/v1/do trivial req/s vs floor", self.ratio("do_example"), 0.5, "x", at_least=True),
                Target("/v1/commands req/s vs floor", self.ratio("commands"), 0.8, "x", at_least=True),
                Target(
                    "/v1/do req/s, metrics+JSON logs vs both off",
                    self.rps_ratio("do_observed", "do_quiet"),
                    0.95,
                    "x",
                    at_least=True,
                ),
                Target("idle RSS of the proxy", self.idle_rss_mib, 120.0, "MiB", at_least=False),
                Target("start to first 200", self.startup_median("proxy"), 2.0, "s", at_least=False),
                Target("typeahead cities p50 at c=1", self.p50("typeahead"), 5.0, "ms", at_least=False),
                Target(
                    "remote /v1/do req/s vs Envoy", self.rps_ratio(REMOTE, ENVOY), 1.0, "x", at_least=True
                ),
                Target(
                    "remote /v1/do CPU/request vs Envoy",
                    self.cpu_ratio(REMOTE, ENVOY),
                    1.0,
                    "x",
                    at_least=False,
                ),
            )
        )

    def table(self) -> str:
        c = self.connections
        header = (
            "scenario",
            f"req/s c={c}",
            "spread",
            "p50 ms c=1",
            "p99 ms c=1",
            "x floor",
            "srv CPU us/req",
            "CPU x floor",
            "errors",
        )
        rows: list[Sequence[str]] = []
        notes: list[str] = []
        for key, runs in self.runs.items():
            if not runs.many:
                continue
            base = self.baseline(runs)
            unit = "1.00x" if key.startswith("floor") else "-"
            ratio = f"{runs.ratio_to(base):.2f}x" if base is not None else unit
            cpu_ratio = f"{runs.cpu_ratio_to(base):.2f}x" if base is not None else unit
            rows.append(
                (
                    runs.scenario.label,
                    _fmt_num(runs.rps),
                    f"{runs.spread * 100:.0f}%",
                    _fmt_ms(runs.p50_ms),
                    _fmt_ms(runs.p99_ms),
                    ratio,
                    f"{runs.server_us_per_req:.0f}",
                    cpu_ratio,
                    str(runs.errors),
                )
            )
        for key, why in self.skipped.items():
            rows.append((key, "skipped", *([""] * (len(header) - 2))))
            notes.append(f"{key} skipped: {why}")
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        legend = [
            "",
            f"req/s: median of the rounds at c={c}; spread: (max - min) / median of those; p50/p99: medians",
            "of the rounds at one connection; x floor: median of the per-round req/s ratios to the floor",
            "route (floor POST for the /v1/do, remote and gRPC rows); srv CPU: CPU time of the serving",
            "process(es) per request at c=16; CPU x floor: the floor's CPU per request over this row's.",
        ]
        return "\n".join([*lines, *legend, "", *notes] if notes else [*lines, *legend])

    def remote_table(self) -> str:
        """The remote path next to Envoy and the embedded proxy: req/s, latency, CPU per request
        with each serving process's share, and the ratios."""
        rows: list[Sequence[str]] = []
        for key in (EMBEDDED, REMOTE, ENVOY):
            runs = self._measured(key)
            if runs is None:
                continue
            split = " + ".join(f"{name} {us:.0f}" for name, us in runs.process_us_per_req.items())
            rows.append(
                (
                    runs.scenario.label,
                    _fmt_num(runs.rps),
                    f"{runs.spread * 100:.0f}%",
                    f"{runs.many_p50_ms:.2f} / {runs.many_p99_ms:.2f}",
                    f"{runs.p50_ms:.2f} / {runs.p99_ms:.2f}",
                    f"{runs.server_us_per_req:.0f}",
                    split,
                )
            )
        if len(rows) < 2:
            return ""
        c = self.connections
        header = (
            "system",
            f"req/s c={c}",
            "spread",
            f"p50/p99 ms c={c}",
            "p50/p99 ms c=1",
            "CPU us/req",
            "CPU us/req per process",
        )
        widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
        lines = [
            "  ".join(
                str(cell).ljust(w) if i in (0, len(header) - 1) else str(cell).rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
            for row in [header, *rows]
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        out = ["the remote path and Envoy, each in front of the same gRPC server process:", "", *lines, ""]
        for key, other, name in (
            (REMOTE, ENVOY, "remote / envoy"),
            (REMOTE, EMBEDDED, "remote / embedded"),
            (ENVOY, EMBEDDED, "envoy / embedded"),
        ):
            rps, cpu = self.rps_ratio(key, other), self.cpu_ratio(key, other)
            if rps is not None and cpu is not None:
                out.append(f"{name + ':':19} req/s {rps:.2f}x, CPU per request {cpu:.2f}x")
        out += [
            "",
            "req/s ratios: medians of the per-round ratios (neighbours in each round); CPU per request:",
            "user + system time of the serving processes (shim + gRPC server, Envoy + gRPC server) over the",
            "requests at c=16, medians of the rounds. The shim answers spiff's whole envelope; Envoy the",
            "reply message alone.",
        ]
        return "\n".join(out)

    def text(self) -> str:
        out = [self.table(), ""]
        if remote := self.remote_table():
            out += [remote, ""]
        if "do_http" in self.runs and "target" in self.runs and self.runs["do_http"].many:
            target = self.runs["target"]
            do_http = self.runs["do_http"]
            out.append(
                f"http/GetRequestV2: {_fmt_num(do_http.rps)} req/s through the proxy; "
                f"the target alone serves {_fmt_num(target.rps)} req/s "
                f"({do_http.ratio_to(target):.2f}x of it)."
            )
        observed, quiet = self._measured("do_observed"), self._measured("do_quiet")
        if observed is not None and quiet is not None:
            out.append(
                f"observability: with metrics and JSON logs (an access line per call) /v1/do served "
                f"{observed.ratio_to(quiet):.3f}x the req/s of metrics and logs off "
                f"({observed.server_us_per_req - quiet.server_us_per_req:+.1f} us of server CPU per request)."
            )
        if "grpc" in self.runs and self.runs["grpc"].many:
            grpc_runs = self.runs["grpc"]
            out.append(
                f"direct gRPC: the Python client used {grpc_runs.client_cpu:.2f} cores at "
                f"c={self.connections} (on 2 cores a client near 1.0 is part of the limit)."
            )
        rss_after = (
            f"; {self.rss_after_mib:.1f} MiB after all rounds" if self.rss_after_mib is not None else ""
        )
        if self.idle_rss_mib is not None:
            out.append(f"proxy idle RSS: {self.idle_rss_mib:.1f} MiB after start-up and warm-up{rss_after}.")
        for system, samples in self.startup_s.items():
            shown = ", ".join(f"{s:.3f}" for s in samples)
            out.append(
                f"start to first 200 ({system}): median {statistics.median(samples):.3f} s of [{shown}]"
            )
        if self.jobs is not None:
            out += ["", self.jobs.text()]
        out.append("")
        out.append("targets:")
        for goal in self.verdict().targets:
            value = "n/a" if goal.value is None else f"{goal.value:.2f} {goal.unit}"
            op = ">=" if goal.at_least else "<="
            out.append(f"  {goal.verdict:4}  {goal.name}: {value} ({op} {goal.limit:g} {goal.unit})")
        if self.notes:
            out.append("")
            out.extend(f"note: {n}" for n in self.notes)
        return "\n".join(out)

    def to_json(self) -> dict[str, Any]:
        return {
            "meta": self.meta,
            "scenarios": {
                key: runs.to_json(self.baseline(runs)) for key, runs in self.runs.items() if runs.many
            },
            "skipped": self.skipped,
            "idle_rss_mib": None if self.idle_rss_mib is None else round(self.idle_rss_mib, 1),
            "rss_after_rounds_mib": None if self.rss_after_mib is None else round(self.rss_after_mib, 1),
            "startup_s": {
                system: {"median": round(statistics.median(s), 3), "samples": [round(x, 3) for x in s]}
                for system, s in self.startup_s.items()
            },
            "targets": [
                {
                    "name": t.name,
                    "value": t.value,
                    "limit": t.limit,
                    "unit": t.unit,
                    "at_least": t.at_least,
                    "verdict": t.verdict,
                }
                for t in self.verdict().targets
            ],
            "remote_vs_envoy": {
                "rps_ratio": _rounded(self.rps_ratio(REMOTE, ENVOY)),
                "cpu_per_req_ratio": _rounded(self.cpu_ratio(REMOTE, ENVOY)),
                "remote_vs_embedded_rps_ratio": _rounded(self.rps_ratio(REMOTE, EMBEDDED)),
                "remote_vs_embedded_cpu_per_req_ratio": _rounded(self.cpu_ratio(REMOTE, EMBEDDED)),
                "envoy_vs_embedded_rps_ratio": _rounded(self.rps_ratio(ENVOY, EMBEDDED)),
                "envoy_vs_embedded_cpu_per_req_ratio": _rounded(self.cpu_ratio(ENVOY, EMBEDDED)),
            },
            "jobs": None if self.jobs is None else self.jobs.to_json(),
            "notes": self.notes,
        }

    def write_json(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

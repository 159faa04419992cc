"""The jobs benchmark's figures: per-round results, medians, broker/embedded ratios, text and JSON."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIGURES", "JobModeRuns", "JobRound", "JobsReport"]

CALLBACK_PROBLEMS = ("missing", "duplicates", "bad", "unexpected")


@dataclass(frozen=True)
class JobRound:
    """One round of one mode: the jobs load generator's result (``bench.jobs_load``)."""

    latency: dict[str, Any]
    burst: dict[str, Any]

    @property
    def accepted_rps(self) -> float:
        return float(self.burst["accepted_rps"])

    @property
    def drained_rps(self) -> float:
        return float(self.burst["drained_rps"])

    @property
    def p50_ms(self) -> float:
        return float(self.latency["p50_ms"])

    @property
    def p99_ms(self) -> float:
        return float(self.latency["p99_ms"])

    @property
    def accepted(self) -> int:
        """Jobs answered 202, in both phases."""
        return int(self.latency["jobs"]) + int(self.burst["accepted"])

    @property
    def delivered(self) -> int:
        """Jobs answered 202 whose callback arrived, in both phases."""
        return int(self.latency["delivered"]) + int(self.burst["delivered"])

    @property
    def errors(self) -> int:
        """POSTs not answered 202 (another status, a socket error or a timeout), in both phases."""
        return int(self.latency["errors"]) + int(self.burst["errors"])

    def problems(self) -> dict[str, int]:
        """Callbacks that were not exactly one good callback per accepted job, by kind."""
        return {kind: int(self.latency[kind]) + int(self.burst[kind]) for kind in CALLBACK_PROBLEMS}

    def to_json(self) -> dict[str, Any]:
        return {"latency": self.latency, "burst": self.burst}


# The figures reported per mode: (key, column heading, the value of one round).
FIGURES: tuple[tuple[str, str, Callable[[JobRound], float]], ...] = (
    ("accepted_rps", "accepted/s", lambda r: r.accepted_rps),
    ("drained_rps", "drained/s", lambda r: r.drained_rps),
    ("callback_p50_ms", "callback p50 ms", lambda r: r.p50_ms),
    ("callback_p99_ms", "callback p99 ms", lambda r: r.p99_ms),
)


@dataclass
class JobModeRuns:
    """Every round of one job mode."""

    mode: str
    label: str
    rounds: list[JobRound] = field(default_factory=list)

    def median(self, key: str) -> float:
        value = _figure(key)
        return statistics.median(value(r) for r in self.rounds) if self.rounds else 0.0

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def accepted(self) -> int:
        return sum(r.accepted for r in self.rounds)

    @property
    def delivered(self) -> int:
        return sum(r.delivered for r in self.rounds)

    def problems(self) -> dict[str, int]:
        return {kind: sum(r.problems()[kind] for r in self.rounds) for kind in CALLBACK_PROBLEMS}

    def callbacks_text(self) -> str:
        """``delivered/accepted``, then ``once each`` or what went wrong."""
        wrong = [f"{count} {kind}" for kind, count in self.problems().items() if count]
        return f"{self.delivered}/{self.accepted} " + (", ".join(wrong) if wrong else "once each")

    def ratio_to(self, baseline: JobModeRuns, key: str) -> float:
        """Median over rounds of this mode's figure over the baseline's in the same round."""
        value = _figure(key)
        pairs = zip(self.rounds, baseline.rounds, strict=False)
        ratios = [value(mine) / value(base) for mine, base in pairs if value(base)]
        return statistics.median(ratios) if ratios else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            **{key: round(self.median(key), 3) for key, _, _ in FIGURES},
            "errors": self.errors,
            "accepted": self.accepted,
            "delivered": self.delivered,
            "callback_problems": self.problems(),
            "rounds": [r.to_json() for r in self.rounds],
        }


def _figure(key: str) -> Callable[[JobRound], float]:
    for name, _, value in FIGURES:
        if name == key:
            return value
    msg = f"no such jobs figure: {key}"
    raise KeyError(msg)


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True)))
        for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


@dataclass
class JobsReport:
    """The jobs benchmark of one run: each mode's rounds, what was skipped, and how it ran."""

    modes: dict[str, JobModeRuns]
    config: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)
    stray_callbacks: int = 0  # arrived after their round had counted (late duplicates) or unknown
    notes: list[str] = field(default_factory=list)

    def ratios(self) -> dict[str, float] | None:
        """broker / embedded for each figure (medians of per-round ratios), when both ran."""
        broker, embedded = self.modes.get("broker"), self.modes.get("embedded")
        if broker is None or embedded is None or not broker.rounds or not embedded.rounds:
            return None
        return {key: broker.ratio_to(embedded, key) for key, _, _ in FIGURES}

    def text(self) -> str:
        header = ("jobs: mode", *(heading for _, heading, _ in FIGURES), "errors", "callbacks")
        rows: list[Sequence[str]] = []
        for runs in self.modes.values():
            figures = [runs.median(key) for key, _, _ in FIGURES]
            rows.append(
                (
                    runs.label,
                    f"{figures[0]:,.0f}",
                    f"{figures[1]:,.0f}",
                    f"{figures[2]:.2f}",
                    f"{figures[3]:.2f}",
                    str(runs.errors),
                    runs.callbacks_text(),
                )
            )
        ratios = self.ratios()
        if ratios is not None:
            rows.append(("broker / embedded", *(f"{ratios[key]:.2f}x" for key, _, _ in FIGURES), "", ""))
        for mode, why in self.skipped.items():
            rows.append((mode, "skipped", *([""] * (len(header) - 2))))
        c, burst, latency = self.config["connections"], self.config["burst_s"], self.config["latency_s"]
        legend = [
            "",
            f"POST /v1/do/example/Delay (0 s), answered 202; its result PUT to the bench's callback receiver "
            f"(a process of its own). accepted/s: 202s per second, c={c} for {burst:g} s; drained/s: those",
            "jobs over the first POST to the last callback; callback p50/p99: POST to the callback's "
            f"arrival, one job at a time for {latency:g} s. Medians of {self.config['rounds']} "
            "round(s); broker / embedded: median of",
            "the per-round ratios (for latencies, above 1x means the broker mode is slower). "
            f"embedded: {self.config['embedded_job_workers']} job workers in the proxy; broker: "
            f"{self.config['broker_worker_processes']} taskiq worker processes x "
            f"{self.config['broker_jobs_per_process']} jobs.",
        ]
        notes = [f"jobs {mode} mode skipped: {why}" for mode, why in self.skipped.items()]
        if self.stray_callbacks:
            notes.append(
                f"{self.stray_callbacks} callback(s) arrived after their round was counted (late duplicates)"
            )
        notes += self.notes
        return "\n".join([*_table(header, rows), *legend, *([""] + notes if notes else [])])

    def to_json(self) -> dict[str, Any]:
        ratios = self.ratios()
        return {
            "config": self.config,
            "modes": {mode: runs.to_json() for mode, runs in self.modes.items()},
            "ratios_broker_to_embedded": (
                None if ratios is None else {key: round(value, 3) for key, value in ratios.items()}
            ),
            "stray_callbacks": self.stray_callbacks,
            "skipped": self.skipped,
            "notes": self.notes,
        }

"""The jobs benchmark's figures: per-round results, medians, broker/embedded ratios, text and JSON."""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FIGURES", "Figure", "JobModeRuns", "JobRound", "JobsReport"]

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


@dataclass(frozen=True)
class Figure:
    """One figure reported per mode: its JSON key, column heading, format, and value in one round."""

    key: str
    heading: str
    fmt: str
    value: Callable[[JobRound], float]


FIGURES = (
    Figure("accepted_rps", "accepted/s", ",.0f", lambda r: r.accepted_rps),
    Figure("drained_rps", "drained/s", ",.0f", lambda r: r.drained_rps),
    Figure("callback_p50_ms", "callback p50 ms", ".2f", lambda r: r.p50_ms),
    Figure("callback_p99_ms", "callback p99 ms", ".2f", lambda r: r.p99_ms),
)


@dataclass
class JobModeRuns:
    """Every round of one job mode."""

    mode: str
    label: str
    rounds: list[JobRound] = field(default_factory=list)

    def median(self, figure: Figure) -> float:
        return statistics.median(figure.value(r) for r in self.rounds) if self.rounds else 0.0

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

    def ratio_to(self, baseline: JobModeRuns, figure: Figure) -> float:
        """Median over rounds of this mode's figure over the baseline's in the same round."""
        pairs = zip(self.rounds, baseline.rounds, strict=False)
        ratios = [figure.value(mine) / figure.value(base) for mine, base in pairs if figure.value(base)]
        return statistics.median(ratios) if ratios else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            **{figure.key: round(self.median(figure), 3) for figure in FIGURES},
            "errors": self.errors,
            "accepted": self.accepted,
            "delivered": self.delivered,
            "callback_problems": self.problems(),
            "rounds": [r.to_json() for r in self.rounds],
        }


def _table(header: Sequence[str], rows: list[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
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
        """broker / embedded for each figure, by key (medians of per-round ratios), when both ran."""
        broker, embedded = self.modes.get("broker"), self.modes.get("embedded")
        if broker is None or embedded is None or not broker.rounds or not embedded.rounds:
            return None
        return {figure.key: broker.ratio_to(embedded, figure) for figure in FIGURES}

    def rows(self) -> list[Sequence[str]]:
        """The table's rows: each mode's medians, the ratios, the skipped modes."""
        rows: list[Sequence[str]] = []
        for runs in self.modes.values():
            figures = [format(runs.median(f), f.fmt) for f in FIGURES]
            rows.append((runs.label, *figures, str(runs.errors), runs.callbacks_text()))
        ratios = self.ratios()
        if ratios is not None:
            rows.append(("broker / embedded", *(f"{ratios[f.key]:.2f}x" for f in FIGURES), "", ""))
        for mode in self.skipped:
            rows.append((mode, "skipped", *([""] * (len(FIGURES) + 1))))
        return rows

    def legend(self) -> str:
        config = self.config
        return textwrap.fill(
            f"accepted/s: 202s per second to POST /v1/do/example/Delay (0 s) at c={config['connections']} "
            f"for {config['burst_s']:g} s; drained/s: those jobs over the time from the first POST to the "
            "last callback; callback p50/p99: from the POST to the callback's arrival at the bench's "
            f"receiver (a process of its own), one job at a time for {config['latency_s']:g} s; callbacks: "
            "jobs called back / jobs answered 202, and whether each was called back exactly once. "
            f"Medians of {config['rounds']} round(s); broker / embedded: median of the per-round ratios "
            "(for a latency, above 1x means the broker mode is slower). embedded: "
            f"{config['embedded_job_workers']} job workers in the proxy; broker: "
            f"{config['broker_worker_processes']} taskiq worker processes x "
            f"{config['broker_jobs_per_process']} jobs each, RabbitMQ and Redis on this machine.",
            width=100,
        )

    def text(self) -> str:
        header = ("jobs: mode", *(f.heading for f in FIGURES), "errors", "callbacks")
        notes = [f"jobs {mode} mode skipped: {why}" for mode, why in self.skipped.items()]
        if self.stray_callbacks:
            notes.append(
                f"{self.stray_callbacks} callback(s) arrived after their round was counted (late duplicates)"
            )
        notes += self.notes
        return "\n".join([*_table(header, self.rows()), "", self.legend(), *(["", *notes] if notes else [])])

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

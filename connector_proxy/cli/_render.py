"""What the command line prints: indented JSON for programs, plain aligned tables for people."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["commands_table", "fit", "job_fields", "jobs_table", "json_text", "table", "upstreams_table"]

_JOB_STATES = ("queued", "running", "delivering", "delivered", "failed")
_LONG_RUNNING = "*"


def json_text(value: Any) -> str:
    """JSON as people read it: indented, non-ASCII text as is, integers of any size exact."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split())  # one line per row, whatever the text holds


def table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Columns two spaces apart, the last one left ragged."""
    cells = [list(header), *([_cell(value) for value in row] for row in rows)]
    widths = [max(len(row[column]) for row in cells) for column in range(len(header) - 1)]
    return [
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]]).rstrip()
        for row in cells
    ]


def fit(lines: Iterable[str], is_terminal: bool) -> str:
    """The lines as one text; on a terminal, each cut to its width so tables do not wrap."""
    width = shutil.get_terminal_size().columns if is_terminal else 0
    if width < 40:
        return "\n".join(lines)
    return "\n".join(line if len(line) <= width else line[: width - 1] + "…" for line in lines)


def commands_table(commands: Sequence[Mapping[str, Any]]) -> list[str]:
    """One row per parameter of each command of ``/v1/commands``."""
    rows: list[list[Any]] = []
    for command in commands:
        name = command["id"] + (_LONG_RUNNING if command.get("long_running") else "")
        parameters = command.get("parameters") or [{"id": "(none)", "type": "", "required": False}]
        for index, parameter in enumerate(parameters):
            kind = parameter.get("type", "") + (" secret" if parameter.get("secret") else "")
            rows.append(
                [
                    name if index == 0 else "",
                    parameter["id"],
                    kind,
                    "yes" if parameter.get("required") else "",
                    json.dumps(parameter["default"], ensure_ascii=False) if "default" in parameter else "",
                    parameter.get("description", ""),
                ]
            )
    lines = table(["COMMAND", "PARAMETER", "TYPE", "REQUIRED", "DEFAULT", "DESCRIPTION"], rows)
    if any(command.get("long_running") for command in commands):
        lines.append(
            f"{_LONG_RUNNING} long-running: answered 202 at once, the result PUT to spiff__callback_url"
        )
    return lines


def jobs_table(answer: Mapping[str, Any]) -> list[str]:
    """``/v1/jobs``' answer: the jobs, then the number in each state."""
    jobs = answer.get("jobs") or []
    counts = answer.get("counts") or {}
    lines = ["No jobs."]
    if jobs:
        lines = table(
            ["ID", "COMMAND", "STATE", "RUNS", "CALLBACKS", "UPDATED", "LAST ERROR"],
            (
                [
                    j["id"],
                    j["command"],
                    j["state"],
                    j["attempts"],
                    j["delivery_attempts"],
                    j["updated_at"],
                    j.get("last_error"),
                ]
                for j in jobs
            ),
        )
    order = [*_JOB_STATES, *sorted(set(counts) - set(_JOB_STATES))]
    lines.append("All jobs: " + ", ".join(f"{counts[state]} {state}" for state in order if state in counts))
    return lines


def job_fields(job: Mapping[str, Any]) -> list[str]:
    """One job, a field per line."""
    width = max(len(key) for key in job)
    return [f"{key.ljust(width)}  {_cell(value) or '-'}" for key, value in job.items()]


def upstreams_table(answer: Mapping[str, Any]) -> list[str]:
    """``/v1/upstreams``' answer: each gRPC server the proxy fronts."""
    upstreams = answer.get("upstreams") or []
    if not upstreams:
        return ["No upstreams: the proxy fronts no other gRPC server (CONNECTOR_PROXY_GRPC_TARGETS)."]
    return table(
        ["NAME", "TARGET", "STATE", "LAST DISCOVERY", "COMMANDS", "REFUSED", "LAST ERROR"],
        (
            [
                u["name"],
                u["target"],
                u["state"],
                u.get("last_discovery"),
                ", ".join(u.get("commands") or []),
                ", ".join(u.get("refused") or []),
                u.get("last_error"),
            ]
            for u in upstreams
        ),
    )

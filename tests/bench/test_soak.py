"""The soak's short version (``make bench ARGS=--soak`` runs the long one; README "Performance").

One proxy process, started as ``make serve`` starts it, and the soak's upstreams (HTTP target and
Slack stand-in, aiosmtpd, moto's S3, a callback receiver; the machine's PostgreSQL and MariaDB)
take 32 clients sending the soak's whole mix, every local command and each malformed input, for
5 s of warm-up and 20 s more. Every answer must be the one its kind expects (any 5xx, any other
status, a connection error or timeout is an error), every long-running job must be called back,
the proxy's log must hold no ERROR, and its RSS must not grow beyond a generous bound.

The first test shows that the check counts what it should: the same mix with one kind expecting
what it never gets must report exactly that kind's answers as errors, and fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from bench.load import ensure_wrk
from bench.procs import Procs
from bench.soak import SoakOptions, SoakStack, run_soak, sabotaged

pytestmark = pytest.mark.slow

SHORT = SoakOptions(connections=32, duration=20, window=5, warmup=5, rss_tolerance_mib=32.0)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _quiet(text: str) -> None:
    pass


@pytest.fixture(scope="module")
def wrk() -> str:
    path, note = ensure_wrk(allow_install=True)
    if path is None:
        if _in_ci():
            pytest.fail(f"CI is set, and the soak needs wrk: {note}")
        pytest.skip(f"the soak needs wrk: {note}")
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, wrk: str) -> Iterator[SoakStack]:
    work: Path = tmp_path_factory.mktemp("soak")
    with Procs(work) as procs, SoakStack(procs, work, SHORT, say=_quiet) as started:
        yield started


def test_an_unexpected_answer_fails_the_soak(stack: SoakStack, wrk: str) -> None:
    kinds = sabotaged(stack.kinds, "missing_param")  # expects 200; the proxy answers 400
    report = run_soak(stack, wrk, kinds, say=_quiet, options=replace(SHORT, duration=3, window=3, warmup=0))
    answers, unexpected = report.totals["missing_param"]
    assert answers > 0
    assert unexpected == answers, report.text()
    assert {name: bad for name, (_, bad) in report.totals.items() if bad} == {"missing_param": answers}
    assert report.errors == answers
    assert report.failed
    assert "first unexpected answer to missing_param: 400 " in report.text()


def test_short_soak(stack: SoakStack, wrk: str) -> None:
    report = run_soak(stack, wrk, say=_quiet)
    assert report.errors == 0, report.text()
    assert report.rss_flat, report.text()
    assert not report.failed
    # Every kind was sent and answered, the oversized body included.
    assert all(answers > 0 for answers, _ in report.totals.values()), report.text()
    assert len(report.steady) == 4
    assert report.jobs["accepted"] > 0

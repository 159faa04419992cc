"""The fuzzer against /openapi.json (``openapi_fuzz.py``), in a network namespace of its own.

``unshare --net`` gives the run a network with loopback only: every outbound call the generated
parameters ask for (any URL, SMTP or database host, AWS endpoint) fails to connect, and nothing
can reach another machine. Where namespaces are not available the test is skipped, except in CI.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.processes import ROOT

FUZZ = pathlib.Path(__file__).with_name("openapi_fuzz.py")
# The run's budget: about a minute and a half on a 2-core machine.
BUDGET_SECONDS = 300


def _isolated() -> list[str]:
    """The command prefix that runs a program in a new network namespace."""
    unshare = shutil.which("unshare")
    prefix = [unshare, "--net", "--map-root-user"] if unshare else []
    if prefix and subprocess.run([*prefix, "true"], capture_output=True, check=False).returncode == 0:
        return prefix
    reason = "unshare --net --map-root-user is not available here"
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.mark.slow
def test_fuzzing_the_openapi_document_finds_nothing(tmp_path):
    command = [
        *_isolated(),
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-q",
        "--basetemp",
        str(tmp_path / "run"),
        str(FUZZ),
    ]
    result = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=BUDGET_SECONDS, check=False
    )
    assert result.returncode == 0, result.stdout[-30000:] + result.stderr[-5000:]
    assert " passed" in result.stdout.splitlines()[-1]

"""``connector-proxy new-connector``: what it refuses, and a scaffolded connector that passes what
``make test`` checks (formatting, lint, types, buf, the generated code, its own test and the tests
that enumerate connectors), in a copy of the project."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner, Result

from connector_proxy.cli import cli
from connector_proxy.cli._scaffold import MAX_NAME_LENGTH, pascal_case, render

ROOT = pathlib.Path(__file__).resolve().parents[2]
BIN = pathlib.Path(sys.executable).parent
# What the copy leaves out: the venv and git, installed packages, caches, other languages' outputs.
SKIPPED = shutil.ignore_patterns(
    ".venv", ".git", "node_modules", "*_cache", "__pycache__", "dist", "gen", "*.sqlite3*"
)


def scaffold(root: pathlib.Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["new-connector", *args, "--root", str(root)], catch_exceptions=False)


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("Billing", id="upper-case"),
        pytest.param("1billing", id="digit-first"),
        pytest.param("bill-ing", id="dash"),
        pytest.param("bill__ing", id="double-underscore"),
        pytest.param("billing_", id="trailing-underscore"),
        pytest.param("_billing", id="private"),
        pytest.param("class", id="keyword"),
        pytest.param("", id="empty"),
        pytest.param("b" * (MAX_NAME_LENGTH + 1), id="too-long"),
    ],
)
def test_a_name_that_is_not_a_lowercase_identifier_is_refused(name):
    result = scaffold(ROOT, name, "--no-generate")
    assert result.exit_code == 2
    assert "Invalid value for NAME" in result.stderr
    assert not (ROOT / "connectors" / f"{name}.py").exists()


@pytest.mark.parametrize(
    ("name", "taken"),
    [
        pytest.param("example", "connectors/example.py", id="connector"),
        pytest.param("typeahead", "connectors/typeahead", id="package"),
        pytest.param("jsonata", "protos/spiff/connector/jsonata", id="proto-only"),
        pytest.param("v1", "protos/spiff/connector/v1", id="options-package"),
    ],
)
def test_a_name_in_use_is_refused(name, taken):
    before = sorted(p.name for p in (ROOT / "connectors").iterdir())
    result = scaffold(ROOT, name, "--no-generate")
    assert result.exit_code == 2
    assert f"{name!r} is taken: {taken}" in " ".join(result.stderr.split())
    assert sorted(p.name for p in (ROOT / "connectors").iterdir()) == before


def test_a_directory_that_is_not_the_project_is_refused(tmp_path):
    result = scaffold(tmp_path, "billing")
    assert result.exit_code == 2
    assert "--root" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "pascal"), [("billing", "Billing"), ("crm_v2", "CrmV2"), ("s3", "S3"), ("a_b_c", "ABC")]
)
def test_names_become_pascal_case(name, pascal):
    assert pascal_case(name) == pascal


def test_the_python_files_are_formatted_at_every_name_length(tmp_path):
    """One name per length the scaffolder allows (the method signature wraps at long ones)."""
    for length in range(1, MAX_NAME_LENGTH + 1):
        name = ("a_" * length)[:length].rstrip("_") + "z" * (length % 2 == 0)
        assert len(name) == length
        for relative, text in render(name).items():
            if relative.endswith(".py"):
                (tmp_path / relative.replace("/", "__")).write_text(text)
    config = ["--config", str(ROOT / "pyproject.toml")]
    done = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", *config, str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def _check(command: list[str | pathlib.Path], cwd: pathlib.Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, f"{command}:\n{done.stdout}{done.stderr}"


@pytest.mark.slow
def test_a_scaffolded_connector_passes_what_make_test_checks(tmp_path):
    started = time.monotonic()
    name = "crm_v2"
    copy = tmp_path / "project"
    shutil.copytree(ROOT, copy, ignore=SKIPPED)
    python_path = os.pathsep.join([str(copy), str(copy / "clients" / "python")])
    env = {**os.environ, "PYTHONPATH": python_path}
    _check([sys.executable, "-m", "connector_proxy.cli", "new-connector", name], copy, env)

    proto = f"protos/spiff/connector/{name}/v1/{name}.proto"
    module, test = f"connectors/{name}.py", f"tests/connectors/test_{name}.py"
    assert all((copy / path).is_file() for path in (proto, module, test))
    assert (copy / "clients" / "python" / "spiff" / "connector" / name / "v1" / f"{name}_pb2.py").is_file()
    assert f"### `{name}/Hello`" in (copy / "docs" / "connectors.md").read_text()

    _check([sys.executable, "-m", "ruff", "format", "--check", module, test], copy, env)
    _check([sys.executable, "-m", "ruff", "check", module, test], copy, env)
    _check([BIN / "buf", "format", "--diff", "--exit-code"], copy, env)
    _check([BIN / "buf", "lint"], copy, env)
    cache = ["--cache-dir", str(tmp_path / "mypy")]
    _check([sys.executable, "-m", "mypy", *cache, module, test], copy, env)
    _check([sys.executable, "hatch_build.py"], copy, env)  # what make test runs first; changes nothing
    tests = [test, "tests/test_reference.py", "tests/test_lazy_imports.py", "tests/test_generated.py"]
    _check([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], copy, env)

    again = scaffold(copy, name)
    assert again.exit_code == 2
    assert "is taken" in again.stderr
    assert time.monotonic() - started < 60

"""The built wheel, installed with pip into a new virtual environment outside the checkout: the
generated code is inside, ``spiff-connector-proxy`` and ``python -m connector_proxy`` serve, and
nothing is imported from the source tree."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import zipfile

import httpx
import pytest

from tests.ports import free_port
from tests.processes import ROOT, process, stop, wait_for_grpc, wait_for_http

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(ROOT)],
        check=True,
        timeout=300,
    )
    (built,) = out.glob("spiff_connector_proxy-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: pathlib.Path, tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """A new virtual environment (no system site-packages) with the wheel and its dependencies."""
    home = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(home)], check=True, timeout=120)
    subprocess.run(
        [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        timeout=600,
    )
    return home


def outside(venv: pathlib.Path) -> dict[str, str]:
    """The environment for a process of ``venv`` that cannot see the checkout. PYTHONPATH is set
    empty (which Python ignores) rather than left out: tests.processes.process lays the given
    environment over this process's own, where it could be set."""
    env = {**os.environ, "PYTHONPATH": "", "VIRTUAL_ENV": str(venv)}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_wheel_carries_the_generated_code_and_no_tests(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for generated in (
        "spiff/connector/http/v1/http_pb2.py",
        "spiff/connector/http/v1/http_pb2_grpc.py",
        "spiff/connector/v1/options_pb2.py",
    ):
        assert generated in names
    for package in (
        "server/__init__.py",
        "rest_shim/__init__.py",
        "jobs/__init__.py",
        "connectors/http/__init__.py",
    ):
        assert package in names
    assert "connector_proxy/__main__.py" in names
    assert not [name for name in names if name.startswith(("tests/", "bench/", "protos/"))]
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    assert "spiff-connector-proxy = connector_proxy.__main__:main" in (
        zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_the_installed_package_imports_from_its_own_site_packages(venv, tmp_path):
    code = (
        "import connector_proxy, server, spiff.connector.http.v1.http_pb2 as m; "
        "print(connector_proxy.__file__); print(server.__file__); print(m.__file__)"
    )
    result = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code],
        cwd=tmp_path,
        env=outside(venv),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    for path in result.stdout.split():
        assert pathlib.Path(path).is_relative_to(venv), result.stdout


@pytest.mark.parametrize(
    "command", [["spiff-connector-proxy"], ["python", "-m", "connector_proxy"]], ids=["script", "module"]
)
def test_the_installed_proxy_serves(venv, tmp_path, command):
    port, grpc_port = free_port(), free_port()
    env = {**outside(venv), "CONNECTOR_PROXY_PORT": str(port), "CONNECTOR_PROXY_GRPC_PORT": str(grpc_port)}
    log = tmp_path / "proxy.log"
    program, *args = command
    with process(args, env, log, program=str(venv / "bin" / program), cwd=tmp_path) as proc:
        base_url = f"http://127.0.0.1:{port}"
        wait_for_http(base_url, proc, log)
        wait_for_grpc(f"127.0.0.1:{grpc_port}", proc, log)
        assert httpx.get(f"{base_url}/readiness", timeout=5).status_code == 200
        ids = {c["id"] for c in httpx.get(f"{base_url}/v1/commands", timeout=5).json()}
        assert {"http/GetRequestV2", "smtp/SendEmail", "example/Example"} <= ids
        reply = httpx.post(f"{base_url}/v1/do/example/Example", json={"message": "installed"}, timeout=5)
        assert reply.status_code == 200, reply.text
        assert reply.json()["command_response"]["body"]["message"] == "installed"
        stop(proc, log)


def test_the_installed_script_explains_itself(venv, tmp_path):
    result = subprocess.run(
        [str(venv / "bin" / "spiff-connector-proxy"), "--help"],
        cwd=tmp_path,
        env=outside(venv),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for option in ("--grpc-only", "--shim-only", "--worker"):
        assert option in result.stdout

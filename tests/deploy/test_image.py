"""The container images as an operator runs them: spiff-connector-proxy (Dockerfile) in each mode,
and spiff-connector-node (connectors-node/Dockerfile) behind it.

Containers publish their ports on 127.0.0.1 and reach each other on a network of their own, as
in a compose file. The scale-out test is the exception: its proxy and worker containers use the
host's network, because RabbitMQ and Redis listen on the host's loopback only.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from typing import Any

import httpx
import pypdf
import pytest
from grpc_health.v1 import health_pb2

from tests.deploy.containers import Container, Containers, image_config, note
from tests.deploy.images import ContainerTool
from tests.jobs.broker import BROKER_URL, REDIS_URL, drop_namespace
from tests.jobs.fake_spiff import FakeSpiff
from tests.ports import free_port
from tests.processes import grpc_health

pytestmark = pytest.mark.slow

STOP_SECONDS = 10  # a container must be gone this long after SIGTERM (its grace is 30 s)
JOBS_DB = "/var/lib/connector-proxy/jobs.sqlite3"
EVALUATE = {
    "expression": "$sum(lines.(price * qty)) + $shipping",
    "input": {"lines": [{"price": 3, "qty": 2}, {"price": 10, "qty": 1}]},
    "bindings": {"shipping": 4},
}


def assert_runs_as(container: Container, uid: int) -> None:
    assert container.exec("id", "-u").stdout.strip() == str(uid)
    status = container.process_status()
    assert status["Uid"].split() == [str(uid)] * 4, status["Uid"]  # real, effective, saved, file system
    assert status["Gid"].split() == [str(uid)] * 4, status["Gid"]


def assert_stops_cleanly(container: Container, what: str) -> None:
    code, seconds = container.stop()
    note(f"{what}: stop (SIGTERM) to exit", f"{seconds:.2f} s, exit code {code}")
    if code != 0:
        container.fail(f"exit code {code} after SIGTERM")
    assert seconds < STOP_SECONDS


def assert_healthy(container: Container) -> None:
    check = container.healthcheck()
    assert check.returncode == 0, f"HEALTHCHECK failed:\n{check.stdout}\n{check.stderr}"


def do(base: str, command: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(f"{base}/v1/do/{command}", json=body, headers=headers, timeout=30)


# --- the proxy image -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def proxy(module_containers: Containers, proxy_image: str) -> tuple[Container, str]:
    """The default (embedded) mode on a read-only root file system, as Kubernetes'
    readOnlyRootFilesystem runs it: only the volume (and the runtime's /tmp) can be written."""
    container = module_containers.run(proxy_image, "proxy", publish=(7004, 50051), options=["--read-only"])
    base = f"http://127.0.0.1:{container.port(7004)}"
    seconds = container.wait_for_http(f"{base}/readiness")
    note("proxy: `run` to /readiness 200", f"{seconds:.2f} s")
    return container, base


def test_the_image_is_configured_for_running_it(tool: ContainerTool, proxy_image: str):
    config = image_config(tool, proxy_image)
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == ["spiff-connector-proxy"]
    assert set(config["ExposedPorts"]) == {"7004/tcp", "50051/tcp"}
    assert set(config["Volumes"]) == {"/var/lib/connector-proxy"}
    assert config["StopSignal"] == "SIGTERM"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["CONNECTOR_PROXY_HOST"] == "0.0.0.0"
    assert env["CONNECTOR_PROXY_JOBS_DB"] == JOBS_DB
    assert env["PYTHONDONTWRITEBYTECODE"] == env["PYTHONUNBUFFERED"] == "1"
    assert config["Labels"]["org.opencontainers.image.title"] == "spiff-connector-proxy"
    # Kept by the docker image format (podman's default OCI format would drop it).
    assert config["Healthcheck"]["Test"] == ["CMD", "python", "-m", "connector_proxy.probe"]


def test_the_image_holds_no_build_tools_caches_or_tests(containers: Containers, proxy_image: str):
    script = """
        for tool in gcc cc c++ make; do command -v "$tool" && echo "found $tool"; done
        find / -xdev \\( -path '*/.cache/pip' -o -name '*.whl' -path '/tmp/*' \\) -print
        ls -d /src /tmp/wheels /root/.cache 2>/dev/null
        ls /opt/venv/bin | grep -E '^(pip|pytest|mypy|ruff|buf)' || true
        for module in pytest mypy ruff SpiffWorkflow hatchling pip; do
            python -c "import $module" 2>/dev/null && echo "importable: $module"
        done
        true
    """
    found = containers.run_once(proxy_image, "-c", script, options=["--entrypoint", "sh"])
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == ""


def test_rest_answers_as_spiff_arena_expects(proxy: tuple[Container, str]):
    _, base = proxy
    assert httpx.get(f"{base}/liveness").json() == {"ok": True}
    readiness = httpx.get(f"{base}/readiness")
    assert (readiness.status_code, readiness.json()) == (200, {"ready": True})
    commands = {command["id"] for command in httpx.get(f"{base}/v1/commands").json()}
    assert {"http/GetRequestV2", "example/Example", "typeahead/Search"} <= commands

    response = do(base, "example/Example", {"message": "from the image"})
    assert response.status_code == 200
    envelope = response.json()
    assert envelope["error"] is None
    assert envelope["command_response_version"] == 2
    assert envelope["command_response"]["body"]["message"] == "from the image"

    # A connector with data files of its own (the bundled countries), read from the installed wheel.
    response = do(base, "typeahead/Search", {"category": "countries", "prefix": "switz"})
    assert response.status_code == 200, response.text


def test_a_pdf_is_made_with_the_system_libraries_and_fonts_of_the_image(
    containers: Containers, proxy_image: str
):
    """artifacts/GenerateArtifact lays text out with pango and a font the Dockerfile installs, on a
    read-only root file system (a container of its own: the shared one measures idle memory)."""
    container = containers.run(proxy_image, "artifacts", publish=(7004,), options=["--read-only"])
    base = f"http://127.0.0.1:{container.port(7004)}"
    container.wait_for_http(f"{base}/readiness")
    template = "<style>@page { size: A5 }</style><p>Made in {{ where }}</p>"
    params = {"id": "image-check", "template": template, "data": {"where": "the container"}}
    response = do(base, "artifacts/GenerateArtifact", params)
    assert response.status_code == 200, response.text
    body = response.json()["command_response"]["body"]
    page = pypdf.PdfReader(io.BytesIO(base64.b64decode(body["file_data"].partition(",")[2]))).pages[0]
    assert "Made in the container" in page.extract_text()
    resources: Any = page["/Resources"]
    fonts = {str(font.get_object()["/BaseFont"]) for font in resources["/Font"].values()}
    assert any("DejaVu" in font for font in fonts), fonts


def test_grpc_health_is_serving(proxy: tuple[Container, str]):
    container, _ = proxy
    assert grpc_health(f"127.0.0.1:{container.port(50051)}") == health_pb2.HealthCheckResponse.SERVING


def test_the_proxy_runs_as_a_non_root_user(proxy: tuple[Container, str]):
    container, _ = proxy
    assert_runs_as(container, 10001)


def test_the_job_store_is_on_the_volume(tool: ContainerTool, proxy: tuple[Container, str]):
    container, _ = proxy
    mounts = json.loads(container.inspect("{{json .Mounts}}"))
    assert [m["Destination"] for m in mounts] == ["/var/lib/connector-proxy"]
    listing = container.exec("ls", "-ln", "/var/lib/connector-proxy").stdout
    jobs_db = [line for line in listing.splitlines() if line.endswith(" jobs.sqlite3")]
    assert jobs_db, listing
    mode, _, owner, group = jobs_db[0].split()[:4]
    assert (mode, owner, group) == ("-rw-------", "10001", "10001")


def test_the_healthcheck_passes(proxy: tuple[Container, str]):
    container, _ = proxy
    assert_healthy(container)


def test_the_healthcheck_fails_while_the_proxy_is_not_ready(containers: Containers, proxy_image: str):
    """A gRPC target that never answers keeps /readiness at 503, and the HEALTHCHECK failing."""
    container = containers.run(
        proxy_image,
        "not-ready",
        publish=(7004,),
        env={"CONNECTOR_PROXY_GRPC_TARGETS": "jsonata=127.0.0.1:9"},
    )
    container.wait_for_http(f"http://127.0.0.1:{container.port(7004)}/readiness", status=503)
    assert container.healthcheck().returncode != 0


def test_idle_memory(proxy: tuple[Container, str]):
    container, _ = proxy
    rss = container.process_status()["VmRSS"]
    note("proxy (embedded mode): idle RSS of the process", rss)
    assert int(rss.split()[0]) < 400 * 1024  # kB


def test_sigterm_stops_it_at_once_with_exit_code_0(containers: Containers, proxy_image: str):
    container = containers.run(proxy_image, "stopped", publish=(7004,))
    container.wait_for_http(f"http://127.0.0.1:{container.port(7004)}/readiness")
    assert_stops_cleanly(container, "proxy (embedded mode)")
    assert "Traceback" not in container.logs()


def test_a_job_on_the_volume_outlives_the_container(containers: Containers, proxy_image: str):
    """A long-running job accepted by one container is found, queued again, by the next one that
    mounts the same volume."""
    volume = containers.volume("jobs")
    options = ["--volume", f"{volume}:/var/lib/connector-proxy"]
    settings = {"CONNECTOR_PROXY_SHUTDOWN_GRACE": "1"}
    first = containers.run(proxy_image, "first", publish=(7004,), env=settings, options=options)
    base = f"http://127.0.0.1:{first.port(7004)}"
    first.wait_for_http(f"{base}/readiness")
    body = {
        "seconds": 3600,
        "message": "later",
        "spiff__task_id": "task-1",
        "spiff__callback_url": "http://127.0.0.1:9/v1.0/tasks/1/task-1/callback",
    }
    accepted = do(base, "example/Delay", body)
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["command_response"]["body"]["job_id"]
    assert_stops_cleanly(first, "proxy with a running job (grace 1 s)")

    second = containers.run(proxy_image, "second", publish=(7004,), env=settings, options=options)
    base = f"http://127.0.0.1:{second.port(7004)}"
    second.wait_for_http(f"{base}/readiness")
    job = httpx.get(f"{base}/v1/jobs/{job_id}").json()
    assert job["command"] == "example/Delay"
    assert job["state"] in ("queued", "running")
    assert job["attempts"] >= 1


def test_grpc_only_mode(containers: Containers, proxy_image: str):
    container = containers.run(proxy_image, "grpc-only", "--grpc-only", publish=(50051,))
    seconds = container.wait_for_grpc_health(f"127.0.0.1:{container.port(50051)}")
    note("proxy --grpc-only: `run` to gRPC health SERVING", f"{seconds:.2f} s")
    assert_healthy(container)  # its HEALTHCHECK asks gRPC health, there being no REST port
    assert_stops_cleanly(container, "proxy --grpc-only")


def test_worker_mode_needs_a_broker_url(containers: Containers, proxy_image: str):
    completed = containers.run_once(proxy_image, "--worker", "--workers", "2")
    assert completed.returncode == 2
    assert "set CONNECTOR_PROXY_JOBS_BROKER_URL" in completed.stderr


@pytest.mark.usefixtures("broker_services")
def test_a_worker_container_runs_the_jobs_a_proxy_container_accepts(containers: Containers, proxy_image: str):
    # Host networking: RabbitMQ and Redis listen on the host's 127.0.0.1, and so does the fake
    # spiff-arena that receives the callback.
    namespace = f"deploy-{uuid.uuid4().hex[:12]}"
    jobs = {
        "CONNECTOR_PROXY_JOBS_BROKER_URL": BROKER_URL,
        "CONNECTOR_PROXY_JOBS_REDIS_URL": REDIS_URL,
        "CONNECTOR_PROXY_JOBS_NAMESPACE": namespace,
        "CONNECTOR_PROXY_SHUTDOWN_GRACE": "2",
    }
    port = free_port()
    host_network = ["--network", "host"]
    try:
        with FakeSpiff() as spiff:
            worker = containers.run(
                proxy_image,
                "worker",
                "--worker",
                "--workers",
                "1",
                env=jobs,
                options=[*host_network, "--hostname", "deploy-worker"],
            )
            proxy = containers.run(
                proxy_image,
                "broker-proxy",
                env={
                    **jobs,
                    "CONNECTOR_PROXY_HOST": "127.0.0.1",
                    "CONNECTOR_PROXY_PORT": str(port),
                    "CONNECTOR_PROXY_GRPC_PORT": str(free_port()),
                },
                options=host_network,
            )
            base = f"http://127.0.0.1:{port}"
            proxy.wait_for_http(f"{base}/readiness")
            body = {
                "seconds": 0,
                "message": "from a worker container",
                "spiff__task_id": "task-1",
                "spiff__callback_url": f"{spiff.url}/v1.0/tasks/1/task-1/callback",
            }
            accepted = do(base, "example/Delay", body)
            assert accepted.status_code == 202, accepted.text
            job_id = accepted.json()["command_response"]["body"]["job_id"]
            try:
                (callback,) = spiff.wait_for(1, timeout=60)
            except AssertionError:
                worker.fail("no callback from the worker")
            assert callback.method == "PUT"
            assert callback.json()["command_response"]["body"]["message"] == "from a worker container"
            job = httpx.get(f"{base}/v1/jobs/{job_id}").json()
            assert job["state"] == "delivered"
            assert job["worker"].startswith("deploy-worker:")  # the container's host name
            assert_healthy(worker)
            assert_stops_cleanly(worker, "worker --workers 1")
            assert_stops_cleanly(proxy, "proxy (scale-out mode)")
    finally:
        asyncio.run(drop_namespace(namespace))


# --- the Node.js connector server image ------------------------------------------------------


def test_the_node_image_is_configured_for_running_it(tool: ContainerTool, node_image: str):
    config = image_config(tool, node_image)
    assert config["User"] == "1000:1000"
    assert config["Entrypoint"] == ["node", "dist/server.js"]
    assert set(config["ExposedPorts"]) == {"50052/tcp"}
    assert config["StopSignal"] == "SIGTERM"
    assert "CONNECTOR_NODE_HOST=0.0.0.0" in config["Env"]
    assert config["Healthcheck"]["Test"][:2] == ["CMD", "node"]


def test_the_node_image_holds_only_what_runs(containers: Containers, node_image: str):
    script = """
        ls -d node_modules/typescript node_modules/@bufbuild/buf node_modules/@bufbuild/protoc-gen-es \\
            src server.ts gen/spiff dist/server.ts 2>/dev/null
        find dist -name '*.ts' | head -3
        ls gen
        test -f dist/server.js && test -f dist/src/jsonata/worker.js && echo "dist ok"
    """
    found = containers.run_once(node_image, "-c", script, options=["--entrypoint", "sh"])
    assert found.returncode == 0, found.stderr
    assert found.stdout.split() == ["descriptors.binpb", "dist", "ok"]


def test_the_proxy_fronts_the_node_server_container(
    containers: Containers, proxy_image: str, node_image: str
):
    network = containers.network("net")
    on_network = ["--network", network]
    node = containers.run(node_image, "node", publish=(50052,), options=on_network)
    seconds = node.wait_for_grpc_health(f"127.0.0.1:{node.port(50052)}")
    note("node: `run` to gRPC health SERVING", f"{seconds:.2f} s")
    assert_runs_as(node, 1000)
    assert_healthy(node)
    note("node: idle RSS of the process", node.process_status()["VmRSS"])

    proxy = containers.run(
        proxy_image,
        "fronting",
        publish=(7004,),
        env={"CONNECTOR_PROXY_GRPC_TARGETS": f"jsonata={node.name}:50052"},
        options=on_network,
    )
    base = f"http://127.0.0.1:{proxy.port(7004)}"
    proxy.wait_for_http(f"{base}/readiness")  # ready once the Node server's schema is read
    commands = {command["id"]: command for command in httpx.get(f"{base}/v1/commands").json()}
    assert [p["id"] for p in commands["jsonata/Evaluate"]["parameters"]] == [
        "expression",
        "input",
        "bindings",
    ]
    response = do(base, "jsonata/Evaluate", EVALUATE)
    assert response.status_code == 200, response.text
    envelope = response.json()
    assert (envelope["error"], envelope["command_response"]["body"]) == (None, 20)

    assert_stops_cleanly(proxy, "proxy fronting the Node server")
    assert_stops_cleanly(node, "node")
    assert "connector server: stopped" in node.logs()

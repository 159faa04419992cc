"""The images under test: built once per session by ``make image image-node`` (their base images
made first when missing, see tests/deploy/images.py).

Without podman, or docker with a running engine, the tests skip; with ``CI`` set they fail
instead, since CI installs podman and must not pass without running them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from tests.deploy.containers import FIGURES, Containers, note
from tests.deploy.images import (
    NODE_IMAGE,
    PROXY_IMAGE,
    ContainerTool,
    ImagesError,
    build_images,
    ensure_base_images,
    find_tool,
    image_size,
    tool_missing_reason,
)


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(reason: str) -> None:
    """Skips, or fails under CI, where everything the tests need is installed."""
    if in_ci():
        pytest.fail(f"CI is set, and the deploy tests cannot run: {reason}")
    pytest.skip(reason)


def reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="session")
def tool() -> ContainerTool:
    found = find_tool()
    if found is None:
        unavailable(tool_missing_reason())
    assert found is not None
    return found


@pytest.fixture(scope="session")
def images(tool: ContainerTool) -> tuple[str, str]:
    """Both images, built now (the tool's layer cache makes an unchanged build quick)."""
    try:
        ensure_base_images(tool)
        seconds = build_images(tool)
    except ImagesError as exc:
        pytest.fail(str(exc))
    note("make image image-node (this session)", f"{seconds:.1f} s")
    for image in (PROXY_IMAGE, NODE_IMAGE):
        note(f"size of {image}", f"{image_size(tool, image) / 1e6:.0f} MB")
    return PROXY_IMAGE, NODE_IMAGE


@pytest.fixture(scope="session")
def proxy_image(images: tuple[str, str]) -> str:
    return images[0]


@pytest.fixture(scope="session")
def node_image(images: tuple[str, str]) -> str:
    return images[1]


@pytest.fixture
def containers(tool: ContainerTool) -> Iterator[Containers]:
    """Containers (and networks, volumes) removed after the test."""
    made = Containers(tool)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture(scope="module")
def module_containers(tool: ContainerTool) -> Iterator[Containers]:
    """Containers shared by a module's tests, removed after the last."""
    made = Containers(tool)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def broker_services() -> None:
    """RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379), as .ci/run starts them."""
    missing = [name for name, port in (("RabbitMQ", 5672), ("Redis", 6379)) if not reachable(port)]
    if missing:
        unavailable(f"{' and '.join(missing)} not reachable on 127.0.0.1")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if FIGURES:
        terminalreporter.section("container images: measured")
        for what, value in FIGURES.items():
            terminalreporter.write_line(f"{what}: {value}")

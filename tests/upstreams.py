"""An upstream to a test's gRPC server, followed the way the proxy follows one, and the proxy in
front of such servers."""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from connector_proxy._processes import build_proxy_app
from server._registry import Connector
from server.settings import Settings
from server.upstreams import Upstream, UpstreamConfig, UpstreamState


@contextlib.asynccontextmanager
async def upstream_to(target: str, **config: Any) -> AsyncIterator[Upstream]:
    """A started upstream to ``target`` whose first discovery succeeded."""
    upstream = Upstream(UpstreamConfig(name="under-test", target=target, **config))
    await upstream.start()
    try:
        await upstream.first_attempt(10)
        assert upstream.state is UpstreamState.READY, upstream.last_error
        yield upstream
    finally:
        await upstream.close()


@contextlib.asynccontextmanager
async def proxy_fronting(
    targets: str, tmp_path: pathlib.Path, connectors: Sequence[Connector] = (), **env: str
) -> AsyncIterator[httpx.AsyncClient]:
    """The proxy app (as ``python -m connector_proxy`` builds it, without its gRPC port) hosting
    ``connectors`` and fronting ``targets`` (``CONNECTOR_PROXY_GRPC_TARGETS``), started, with a
    client; ``env`` adds settings."""
    settings = Settings.from_env(
        {
            "CONNECTOR_PROXY_GRPC_TARGETS": targets,
            "CONNECTOR_PROXY_JOBS_DB": str(tmp_path / "jobs.sqlite3"),
            **env,
        }
    )
    app = build_proxy_app(settings, connectors, serve_grpc=False)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://proxy.test")
    async with app.router.lifespan_context(app), client:
        yield client

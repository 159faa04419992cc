"""``CONNECTOR_PROXY_METRICS_PORT``: ``GET /metrics`` without the API key on a port of its own,
for scrapers that send no credentials (Kubernetes pod annotations, most Prometheus setups), kept
off the port spiff-arena and the world reach. Served by aiohttp in the process's event loop."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

__all__ = ["serving_metrics"]

Exposition = Callable[[str | None], Awaitable[tuple[bytes, str]]]


@contextlib.asynccontextmanager
async def serving_metrics(host: str, port: int, exposition: Exposition) -> AsyncIterator[None]:
    """Serves ``GET /metrics`` on ``host:port`` while the context is open; ``exposition(accept)``
    gives the body and its content type."""
    from aiohttp import web

    async def metrics(request: web.Request) -> web.Response:
        body, content_type = await exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        yield
    finally:
        await runner.cleanup()

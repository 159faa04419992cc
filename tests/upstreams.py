"""An upstream to a test's gRPC server, followed the way the proxy follows one."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

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

"""The egress policy (``server.egress``) in aiohttp sessions: a resolver that hands aiohttp only the
allowed addresses of a name, and a middleware for what no resolver sees.

aiohttp resolves a name once per connection (or takes it from its 10 s DNS cache, which holds only
what the resolver returned) and connects to exactly those addresses, so the checked address is the
one connected to. It never asks the resolver about an IP address literal, and an HTTP proxy
resolves the target itself: the middleware checks those, on every request, redirects included.
"""

from __future__ import annotations

import socket
from typing import Any

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from server.egress import EgressPolicy, is_address

__all__ = ["EgressResolver", "egress_middleware", "egress_session", "is_host_name"]


def is_host_name(host: str) -> bool:
    """``host`` (a URL's raw host) can be looked up: an IP address, or a name whose labels the
    resolver can encode (none empty or over 63 characters, IDNA where not ASCII)."""
    if is_address(host):
        return True
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return True


class EgressResolver(AbstractResolver):
    """Resolves with ``inner`` (aiohttp's default resolver), keeping only the allowed addresses.

    Raises (from ``resolve``):
        server.egress.EgressDenied: the name, or every address it resolves to, is denied.
    """

    def __init__(self, policy: EgressPolicy, connector: str, inner: AbstractResolver | None = None) -> None:
        self._policy = policy
        self._connector = connector
        self._inner = inner if inner is not None else aiohttp.DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self._policy.check_host(host, port, connector=self._connector)  # a denied name is not looked up
        if not is_host_name(host):  # else getaddrinfo raises UnicodeError, which aiohttp does not expect
            raise OSError(socket.EAI_NONAME, f"{host!r} is not a valid host name")
        results = await self._inner.resolve(host, port, family)
        allowed = set(
            self._policy.permitted(host, port, [r["host"] for r in results], connector=self._connector)
        )
        return [r for r in results if r["host"] in allowed]

    async def close(self) -> None:
        await self._inner.close()


def egress_middleware(policy: EgressPolicy, connector: str) -> aiohttp.ClientMiddlewareType:
    """Checks, before each request is sent, a target given as an IP address, and the target and
    the proxy of a request through an HTTP proxy (whose names the resolver checks when it
    connects)."""

    async def check(
        request: aiohttp.ClientRequest, handler: aiohttp.ClientHandlerType
    ) -> aiohttp.ClientResponse:
        host, port = request.url.raw_host or "", request.url.port or 0
        if request.proxy is not None:
            policy.check_unresolved(host, port, connector=connector)
            proxy_host = request.proxy.raw_host or ""
            if is_address(proxy_host):
                policy.permitted(proxy_host, request.proxy.port or 0, [proxy_host], connector=connector)
        elif is_address(host):
            policy.permitted(host, port, [host.strip("[]")], connector=connector)
        return await handler(request)

    return check


def egress_session(policy: EgressPolicy, connector: str, **kwargs: Any) -> aiohttp.ClientSession:
    """An aiohttp session whose connections follow the policy (``kwargs`` go to ClientSession)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(resolver=EgressResolver(policy, connector)),
        middlewares=(egress_middleware(policy, connector),),
        **kwargs,
    )

"""Which endpoints the aws connector may call: per-call ``endpoint_url`` only when the operator
listed it, and every request's host checked by the egress policy before botocore sends it.

A per-call endpoint_url would send requests signed with the proxy's own credentials wherever a
diagram says, so it is refused (EgressDenied) unless it matches, on scheme, host and port, an
endpoint in ``CONNECTOR_PROXY_AWS_ENDPOINT_URLS`` (comma-separated) or one the operator set with
``AWS_ENDPOINT_URL``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL_DYNAMODB``.

The check before sending resolves the request's host and refuses it when the policy denies it.
urllib3 resolves the name again when it opens a connection, so that check does not stop DNS
rebinding: the allow-list of endpoints is the control for per-call endpoints.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
from typing import Any
from urllib.parse import urlsplit

from server.egress import EgressPolicy, denied, is_address

__all__ = ["ENV_ENDPOINT_URLS", "SendCheck", "check_endpoint", "parse_endpoint_urls"]

ENV_ENDPOINT_URLS = "CONNECTOR_PROXY_AWS_ENDPOINT_URLS"
_OPERATOR_ENDPOINTS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL_DYNAMODB")
_CHECKED_FOR = 10.0  # seconds an allowed host:port is not resolved again (aiohttp's DNS cache TTL)


def _origin(url: str) -> tuple[str, str, int] | None:
    """``(scheme, host, port)`` of an http(s) URL, the port made explicit; None if it is not one."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.rstrip(".").lower(), port or (443 if parts.scheme == "https" else 80)


@functools.lru_cache(maxsize=8)
def parse_endpoint_urls(raw: str) -> frozenset[tuple[str, str, int]]:
    """The origins listed in ``CONNECTOR_PROXY_AWS_ENDPOINT_URLS``.

    Raises:
        ValueError: an entry is not an http(s) URL (the value is not repeated: it may hold credentials).
    """
    origins = set()
    for position, item in enumerate((part for part in raw.split(",") if part.strip()), 1):
        origin = _origin(item)
        if origin is None:
            msg = f"{ENV_ENDPOINT_URLS} must list http(s) URLs; entry {position} is not one"
            raise ValueError(msg)
        origins.add(origin)
    return frozenset(origins)


def check_endpoint(endpoint_url: str) -> None:
    """Refuses a per-call endpoint the operator did not list or configure.

    Raises:
        server.egress.EgressDenied: the endpoint is not allowed (logged as a WARNING).
    """
    origin = _origin(endpoint_url)
    if origin is None:  # parse_target reports it as an invalid parameter
        return
    allowed = set(parse_endpoint_urls(os.environ.get(ENV_ENDPOINT_URLS, "")))
    allowed.update(o for name in _OPERATOR_ENDPOINTS if (o := _origin(os.environ.get(name, ""))) is not None)
    if origin not in allowed:
        scheme, host, port = origin
        reason = (
            f"endpoint_url {scheme}://{host}:{port} is not in {ENV_ENDPOINT_URLS} "
            "(per-call endpoints are signed with the proxy's credentials)"
        )
        connector = "aws"
        raise denied(connector, host, port, reason)


class SendCheck:
    """A botocore ``before-send`` handler: the request's host, resolved, must be allowed by the
    policy. Allowed hosts are remembered for a few seconds, so keep-alive calls do not resolve."""

    def __init__(self, policy: EgressPolicy) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        self._allowed: dict[tuple[str, int], float] = {}

    def __call__(self, request: Any, **kwargs: Any) -> None:
        origin = _origin(request.url)
        if origin is None:
            return
        _, host, port = origin
        now = time.monotonic()
        with self._lock:
            if self._allowed.get((host, port), 0.0) > now:
                return
        self._policy.check_host(host, port, connector="aws")
        if is_address(host):
            addresses = [host.strip("[]")]
        else:
            try:
                infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
            except OSError:
                return  # botocore's own connection fails and reports it as it always did
            addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        self._policy.permitted(host, port, addresses, connector="aws")
        with self._lock:
            if len(self._allowed) > 256:
                self._allowed.clear()
            self._allowed[(host, port)] = now + _CHECKED_FOR

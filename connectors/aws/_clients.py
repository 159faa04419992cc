"""boto3 clients cached per (service, configuration), and the per-call configuration they are for.

Configuration: boto3's default chain (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL[_S3|_DYNAMODB],
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, the shared config and
credentials files, SSO, container and instance roles), then AWS_REGION for the region; each call
may override region, endpoint_url, aws_access_key_id + aws_secret_access_key (+ aws_session_token)
and profile.

A per-call endpoint_url must be one the operator allowed, and every request's host passes the
egress policy (see ``_endpoints``). Timeouts and retries fit the command's deadline (see
``_budget``).

Clients are thread-safe and cached per (service, configuration, coarse budget), at most 64 by
default, least recently used dropped first; they are created under a lock because botocore
Sessions (which boto3 Sessions wrap) are not thread-safe. All sessions share one loader, so
service models are parsed once per process.
"""

from __future__ import annotations

import collections
import functools
import os
import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from connectors._lazy import lazy_import
from server import errors
from server.egress import EgressPolicy

from ._budget import coarse_budget, fit
from ._endpoints import SendCheck, check_endpoint
from ._errors import SECRET_MASK

if TYPE_CHECKING:
    from botocore import (  # type: ignore[import-untyped]
        config as botocore_config,
        loaders as botocore_loaders,
        session as botocore_session,
    )
else:  # imported by the first call (in its worker thread), not by discovery: about 11 MiB and 120 ms
    botocore_config = lazy_import("botocore.config")
    botocore_loaders = lazy_import("botocore.loaders")
    botocore_session = lazy_import("botocore.session")

__all__ = ["Clients", "Target", "parse_target"]

_REGION = re.compile(r"[a-z0-9-]{1,64}")
DEFAULT_ATTEMPTS = 3  # botocore's standard mode, unless AWS_MAX_ATTEMPTS or the profile says otherwise


class _ConfiguredRequest(Protocol):
    region: str
    endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str
    profile: str


@dataclass(frozen=True)
class Target:
    """Where and as whom a call goes: the per-call overrides (empty = the standard chain)."""

    region: str
    endpoint_url: str
    profile: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)


@functools.cache
def _loader() -> Any:
    """One loader for every session: a new profile (or servicer) does not parse the service models again."""
    return botocore_loaders.create_loader()


class Clients:
    """boto3 clients by (service, target, coarse budget), created under a lock, least recently
    used dropped first.

    A dropped client is not closed: another thread may be using it; its pool goes with it.

    Args:
        configs: botocore Config arguments by service; ``connect_timeout`` and ``read_timeout``
            are the longest, shortened to fit each call's deadline.
        egress: the policy every request's host is checked against.
    """

    def __init__(self, configs: dict[str, dict[str, Any]], limit: int, egress: EgressPolicy) -> None:
        self._configs = configs
        self._limit = limit
        self._send_check = SendCheck(egress)
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._clients: collections.OrderedDict[tuple[str, Target, float | None], Any] = (
            collections.OrderedDict()
        )

    def get(self, service: str, target: Target, remaining: float | None) -> Any:
        """The client for ``target``, with timeouts and retries that fit in ``remaining`` seconds.

        Raises:
            server.egress.EgressDenied: a per-call endpoint_url the operator did not allow.
        """
        if target.endpoint_url:
            check_endpoint(target.endpoint_url)
        budget = coarse_budget(remaining)
        key = (service, target, budget)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            # A session is kept only once it made a client: unknown profiles are not collected.
            session = self._sessions.get(target.profile)
            if session is None:
                session = botocore_session.Session(profile=target.profile or None)
                session.register_component("data_loader", _loader())
            config = dict(self._configs[service])
            timeouts = fit(
                config.pop("connect_timeout"),
                config.pop("read_timeout"),
                int(session.get_config_variable("max_attempts") or DEFAULT_ATTEMPTS),
                budget,
            )
            config.update(
                connect_timeout=timeouts.connect_timeout,
                read_timeout=timeouts.read_timeout,
                retries={"total_max_attempts": timeouts.attempts, "mode": "standard"},
            )
            client = session.create_client(
                service,
                region_name=target.region
                or session.get_config_variable("region")
                or os.environ.get("AWS_REGION")
                or None,
                endpoint_url=target.endpoint_url or None,
                aws_access_key_id=target.access_key_id or None,
                aws_secret_access_key=target.secret_access_key or None,
                aws_session_token=target.session_token or None,
                config=botocore_config.Config(**config),
            )
            client.meta.events.register("before-send", self._send_check)
            self._sessions[target.profile] = session
            SECRET_MASK.add((target.secret_access_key, target.session_token))
            self._clients[key] = client
            if len(self._clients) > self._limit:
                (_, dropped, _), _ = self._clients.popitem(last=False)
                SECRET_MASK.discard((dropped.secret_access_key, dropped.session_token))
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, collections.OrderedDict()
            self._sessions.clear()
        for (_, target, _), client in clients.items():
            SECRET_MASK.discard((target.secret_access_key, target.session_token))
            client.close()


def parse_target(request: _ConfiguredRequest, bad: list[errors.Violation]) -> Target:
    if request.region and not _REGION.fullmatch(request.region):
        bad.append(errors.Violation("region", "must be a region name such as us-east-1"))
    if request.endpoint_url:
        parts = urlsplit(request.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            bad.append(errors.Violation("endpoint_url", "must be an http:// or https:// URL"))
    if bool(request.aws_access_key_id) != bool(request.aws_secret_access_key):
        given, missing = (
            ("aws_access_key_id", "aws_secret_access_key")
            if request.aws_access_key_id
            else ("aws_secret_access_key", "aws_access_key_id")
        )
        bad.append(errors.Violation(missing, f"is required with {given}"))
    if request.aws_session_token and not request.aws_access_key_id:
        bad.append(errors.Violation("aws_session_token", "needs aws_access_key_id and aws_secret_access_key"))
    return Target(
        region=request.region,
        endpoint_url=request.endpoint_url,
        profile=request.profile,
        access_key_id=request.aws_access_key_id,
        secret_access_key=request.aws_secret_access_key,
        session_token=request.aws_session_token,
    )

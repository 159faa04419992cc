"""Configuration from the environment, read once at start-up into a frozen dataclass."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from server.bulkheads import DEFAULT_THREADS
from server.egress import EgressPolicy
from server.upstreams import UpstreamConfig, parse_upstreams

__all__ = ["Settings"]


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        msg = f"{name} must be an integer, got {raw!r}"
        raise ValueError(msg) from None
    if not low <= value <= high:
        msg = f"{name} must be between {low} and {high}, got {value}"
        raise ValueError(msg)
    return value


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        msg = f"{name} must be a number, got {raw!r}"
        raise ValueError(msg) from None


def _secret(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is not None and value.strip() == "":
        msg = f"{name} is set but empty; unset it instead"
        raise ValueError(msg)
    return value


def _seconds(env: Mapping[str, str], name: str, default: float, *, allow_zero: bool = False) -> float:
    value = _float(env, name, default)
    if not (value >= 0 if allow_zero else value > 0) or not math.isfinite(value):
        bound = "at least 0" if allow_zero else "more than 0"
        msg = f"{name} must be a number of seconds {bound}, got {value}"
        raise ValueError(msg)
    return value


_MAX_PORT = 65535
# gRPC's message limits are twice the body limit, and gRPC takes them as C ints.
_MAX_BODY_BYTES = 2**30


@dataclass(frozen=True)
class Settings:
    """Every setting the proxy reads; see the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 7004
    grpc_port: int = 50051
    # GET /metrics without the API key on a port of its own (None: only on the REST port, with it).
    metrics_port: int | None = None
    metrics: bool = True  # count for GET /metrics (false: no counting, no /metrics)
    api_key: str | None = field(default=None, repr=False)  # never in a log
    command_timeout: float = 40.0
    max_body_bytes: int = 32 * 1024 * 1024
    # Admission control: calls in flight per process, and bytes of their bodies held at once;
    # beyond either, 503 ProxyBusy with Retry-After.
    max_in_flight: int = 256
    max_body_bytes_in_flight: int = 128 * 1024 * 1024
    # Bulkheads: threads of each connector's pool for its blocking work, and per-connector sizes
    # (CONNECTOR_PROXY_CONNECTOR_THREADS_<NAME>, by the connector's name in upper case).
    connector_threads: int = DEFAULT_THREADS
    connector_thread_sizes: tuple[tuple[str, int], ...] = ()
    path_prefix: str = ""
    connector_packages: tuple[str, ...] = ("connectors",)
    upstreams: tuple[UpstreamConfig, ...] = ()  # CONNECTOR_PROXY_GRPC_TARGETS, with their settings
    discovery_interval: float = 60.0
    upstream_keepalive: float = 300.0
    # TLS on the gRPC port; with a client CA, callers need a certificate it signed.
    grpc_tls_cert_file: str | None = None
    grpc_tls_key_file: str | None = None
    grpc_tls_client_ca_file: str | None = None
    shutdown_grace: float = 30.0
    # Seconds between SIGTERM and the shutdown: readiness and gRPC health say "not serving" while
    # calls are still answered, so load balancers stop sending new ones first.
    drain_delay: float = 0.0
    log_level: str = "INFO"
    log_format: str = "plain"  # or "json": one JSON object per line
    access_log: bool = True  # one INFO line per /v1/do answer
    # Long-running commands (README "Long-running commands").
    jobs_db: str = "connector-proxy-jobs.sqlite3"
    job_workers: int = 4
    job_timeout: float = 3600.0
    job_run_attempts: int = 3
    max_pending_jobs: int = 10_000  # jobs queued, running or delivering; beyond, 503 JobsBusy
    jobs_retention: float = 7 * 24 * 3600.0
    callback_base_url: str = ""
    callback_api_key: str | None = field(default=None, repr=False)
    callback_bearer_token: str | None = field(default=None, repr=False)
    callback_auth_identifier: str | None = None
    callback_attempts: int = 10
    callback_backoff_base: float = 1.0
    callback_backoff_cap: float = 60.0
    callback_timeout: float = 30.0
    # Scale-out jobs: set the broker URL to run jobs on RabbitMQ workers instead of in-process.
    jobs_broker_url: str | None = field(default=None, repr=False)  # may carry a password
    jobs_redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    jobs_namespace: str = "spiff-connector-proxy"
    # Where connectors may connect (CONNECTOR_PROXY_EGRESS_*); each connector reads the same
    # variables, this copy refuses a malformed one at start-up.
    egress: EgressPolicy = field(default_factory=EgressPolicy, repr=False)
    # The browser OAuth flow (GET /v1/auth/...): the spiff-arena URLs it may send browsers back to,
    # the key signing its state (random per process when unset), the proxy's URL as browsers see it.
    oauth_redirect_urls: tuple[str, ...] = ()
    oauth_state_secret: str | None = field(default=None, repr=False)
    public_url: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads the ``CONNECTOR_PROXY_*`` variables.

        Raises:
            ValueError: a malformed or out-of-range number, or an API key that is set but
                empty (which would otherwise silently leave the proxy open).
        """
        env = os.environ if env is None else env
        api_key = env.get("CONNECTOR_PROXY_API_KEY")
        if api_key is not None and api_key.strip() == "":
            msg = "CONNECTOR_PROXY_API_KEY is set but empty; unset it to run without a key"
            raise ValueError(msg)
        timeout = _float(env, "CONNECTOR_PROXY_COMMAND_TIMEOUT", cls.command_timeout)
        if not 0 < timeout < 45:
            msg = "CONNECTOR_PROXY_COMMAND_TIMEOUT must be between 0 and spiff-arena's 45 s budget"
            raise ValueError(msg)
        grace = _float(env, "CONNECTOR_PROXY_SHUTDOWN_GRACE", cls.shutdown_grace)
        if not 0 <= grace < math.inf:
            msg = f"CONNECTOR_PROXY_SHUTDOWN_GRACE must be a number of seconds, got {grace}"
            raise ValueError(msg)
        callback_api_key = _secret(env, "CONNECTOR_PROXY_CALLBACK_API_KEY")
        callback_bearer_token = _secret(env, "CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN")
        if callback_api_key is not None and callback_bearer_token is not None:
            msg = "set CONNECTOR_PROXY_CALLBACK_API_KEY or CONNECTOR_PROXY_CALLBACK_BEARER_TOKEN, not both"
            raise ValueError(msg)
        callback_base_url = env.get("CONNECTOR_PROXY_CALLBACK_BASE_URL", "").strip().rstrip("/")
        if callback_base_url:
            base = urlsplit(callback_base_url)
            if base.scheme not in ("http", "https") or not base.hostname or base.query or base.fragment:
                msg = (
                    "CONNECTOR_PROXY_CALLBACK_BASE_URL must be an http(s) URL without query, "
                    f"e.g. http://backend:7000, got {callback_base_url!r}"
                )
                raise ValueError(msg)
        elif callback_api_key is not None or callback_bearer_token is not None:
            # The credential goes only to the configured backend, never to a host a caller names.
            msg = (
                "a callback credential is set: set CONNECTOR_PROXY_CALLBACK_BASE_URL to spiff-arena's "
                "backend as this proxy reaches it (e.g. http://backend:7000); callbacks and the credential "
                "go only there"
            )
            raise ValueError(msg)
        backoff_base = _seconds(
            env, "CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE", cls.callback_backoff_base, allow_zero=True
        )
        backoff_cap = _seconds(
            env, "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP", cls.callback_backoff_cap, allow_zero=True
        )
        if backoff_cap < backoff_base:
            msg = (
                "CONNECTOR_PROXY_CALLBACK_BACKOFF_CAP must not be below CONNECTOR_PROXY_CALLBACK_BACKOFF_BASE"
            )
            raise ValueError(msg)
        metrics = _bool(env, "CONNECTOR_PROXY_METRICS", default=cls.metrics)
        metrics_port = _int(env, "CONNECTOR_PROXY_METRICS_PORT", 0, 0, _MAX_PORT) or None
        if metrics_port is not None and not metrics:
            msg = "CONNECTOR_PROXY_METRICS_PORT serves metrics, and CONNECTOR_PROXY_METRICS=false counts none"
            raise ValueError(msg)
        max_body_bytes = _int(env, "CONNECTOR_PROXY_MAX_BODY_BYTES", cls.max_body_bytes, 1, _MAX_BODY_BYTES)
        bytes_in_flight = _int(
            env, "CONNECTOR_PROXY_MAX_BODY_BYTES_IN_FLIGHT", cls.max_body_bytes_in_flight, 1, 2**62
        )
        if bytes_in_flight < max_body_bytes:
            msg = (
                "CONNECTOR_PROXY_MAX_BODY_BYTES_IN_FLIGHT must be at least CONNECTOR_PROXY_MAX_BODY_BYTES "
                f"({max_body_bytes}): a body of the largest size would never be admitted"
            )
            raise ValueError(msg)
        prefix = env.get("CONNECTOR_PROXY_PATH_PREFIX", "").rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        return cls(
            host=env.get("CONNECTOR_PROXY_HOST", cls.host),
            port=_int(env, "CONNECTOR_PROXY_PORT", cls.port, 0, _MAX_PORT),
            grpc_port=_int(env, "CONNECTOR_PROXY_GRPC_PORT", cls.grpc_port, 0, _MAX_PORT),
            metrics_port=metrics_port,
            metrics=metrics,
            api_key=api_key,
            command_timeout=timeout,
            max_body_bytes=max_body_bytes,
            max_in_flight=_int(env, "CONNECTOR_PROXY_MAX_IN_FLIGHT", cls.max_in_flight, 1, 1_000_000),
            max_body_bytes_in_flight=bytes_in_flight,
            connector_threads=_int(env, "CONNECTOR_PROXY_CONNECTOR_THREADS", cls.connector_threads, 1, 1024),
            connector_thread_sizes=_thread_sizes(env),
            path_prefix=prefix,
            connector_packages=_list(env.get("CONNECTOR_PROXY_CONNECTORS")) or cls.connector_packages,
            upstreams=parse_upstreams(env),
            discovery_interval=_seconds(env, "CONNECTOR_PROXY_DISCOVERY_INTERVAL", cls.discovery_interval),
            upstream_keepalive=_seconds(
                env, "CONNECTOR_PROXY_UPSTREAM_KEEPALIVE", cls.upstream_keepalive, allow_zero=True
            ),
            **_grpc_tls(env),
            shutdown_grace=grace,
            drain_delay=_seconds(env, "CONNECTOR_PROXY_DRAIN_DELAY", cls.drain_delay, allow_zero=True),
            log_level=_log_level(env),
            log_format=_choice(env, "CONNECTOR_PROXY_LOG_FORMAT", ("plain", "json")),
            access_log=_bool(env, "CONNECTOR_PROXY_ACCESS_LOG", default=cls.access_log),
            jobs_db=env.get("CONNECTOR_PROXY_JOBS_DB", "") or cls.jobs_db,
            job_workers=_int(env, "CONNECTOR_PROXY_JOB_WORKERS", cls.job_workers, 1, 256),
            job_timeout=_seconds(env, "CONNECTOR_PROXY_JOB_TIMEOUT", cls.job_timeout),
            job_run_attempts=_int(env, "CONNECTOR_PROXY_JOB_RUN_ATTEMPTS", cls.job_run_attempts, 1, 100),
            max_pending_jobs=_int(env, "CONNECTOR_PROXY_MAX_PENDING_JOBS", cls.max_pending_jobs, 1, 10**9),
            jobs_retention=_seconds(env, "CONNECTOR_PROXY_JOBS_RETENTION", cls.jobs_retention),
            callback_base_url=callback_base_url,
            callback_api_key=callback_api_key,
            callback_bearer_token=callback_bearer_token,
            callback_auth_identifier=env.get("CONNECTOR_PROXY_CALLBACK_AUTH_IDENTIFIER") or None,
            callback_attempts=_int(env, "CONNECTOR_PROXY_CALLBACK_ATTEMPTS", cls.callback_attempts, 1, 1000),
            callback_backoff_base=backoff_base,
            callback_backoff_cap=backoff_cap,
            callback_timeout=_seconds(env, "CONNECTOR_PROXY_CALLBACK_TIMEOUT", cls.callback_timeout),
            jobs_broker_url=_url(env, "CONNECTOR_PROXY_JOBS_BROKER_URL", ("amqp", "amqps")),
            jobs_redis_url=_url(env, "CONNECTOR_PROXY_JOBS_REDIS_URL", ("redis", "rediss", "unix"))
            or cls.jobs_redis_url,
            jobs_namespace=_namespace(env),
            egress=EgressPolicy.from_env(env),
            oauth_redirect_urls=_redirect_urls(env),
            oauth_state_secret=_secret(env, "CONNECTOR_PROXY_OAUTH_STATE_SECRET"),
            public_url=_base_url(env, "CONNECTOR_PROXY_PUBLIC_URL"),
        )


def _redirect_urls(env: Mapping[str, str]) -> tuple[str, ...]:
    name = "CONNECTOR_PROXY_OAUTH_REDIRECT_URLS"
    urls = _list(env.get(name))
    for url in urls:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            msg = (
                f"{name} holds http(s) URLs without query, e.g. "
                f"https://spiff.example.com/api/v1.0/authentication_callback/, got {url!r}"
            )
            raise ValueError(msg)
    return urls


def _base_url(env: Mapping[str, str], name: str) -> str:
    raw = env.get(name, "").strip().rstrip("/")
    parts = urlsplit(raw)
    if raw and (parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment):
        msg = f"{name} must be an http(s) URL without query, e.g. https://proxy.example.com, got {raw!r}"
        raise ValueError(msg)
    return raw


_THREADS_PREFIX = "CONNECTOR_PROXY_CONNECTOR_THREADS_"


def _thread_sizes(env: Mapping[str, str]) -> tuple[tuple[str, int], ...]:
    """``CONNECTOR_PROXY_CONNECTOR_THREADS_<NAME>``: (NAME, threads), NAME in upper case."""
    return tuple(
        sorted(
            (name.removeprefix(_THREADS_PREFIX), _int(env, name, 0, 1, 1024))
            for name in env
            if name.startswith(_THREADS_PREFIX) and len(name) > len(_THREADS_PREFIX)
        )
    )


def _grpc_tls(env: Mapping[str, str]) -> dict[str, str | None]:
    cert = env.get("CONNECTOR_PROXY_GRPC_TLS_CERT_FILE", "").strip() or None
    key = env.get("CONNECTOR_PROXY_GRPC_TLS_KEY_FILE", "").strip() or None
    client_ca = env.get("CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE", "").strip() or None
    if (cert is None) != (key is None):
        msg = "CONNECTOR_PROXY_GRPC_TLS_CERT_FILE and CONNECTOR_PROXY_GRPC_TLS_KEY_FILE go together"
        raise ValueError(msg)
    if client_ca is not None and cert is None:
        msg = "CONNECTOR_PROXY_GRPC_TLS_CLIENT_CA_FILE needs CONNECTOR_PROXY_GRPC_TLS_CERT_FILE and _KEY_FILE"
        raise ValueError(msg)
    return {"grpc_tls_cert_file": cert, "grpc_tls_key_file": key, "grpc_tls_client_ca_file": client_ca}


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if urlsplit(raw).scheme not in schemes:
        # The value is not echoed: a URL may carry a password.
        msg = f"{name} must be a {' or '.join(s + '://' for s in schemes)} URL"
        raise ValueError(msg)
    return raw


def _namespace(env: Mapping[str, str]) -> str:
    raw = env.get("CONNECTOR_PROXY_JOBS_NAMESPACE", "").strip() or Settings.jobs_namespace
    if not all(c.isalnum() or c in "-_." for c in raw) or len(raw) > 100:
        msg = f"CONNECTOR_PROXY_JOBS_NAMESPACE may hold letters, digits, '-', '_' and '.', got {raw!r}"
        raise ValueError(msg)
    return raw


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _log_level(env: Mapping[str, str]) -> str:
    level = env.get("CONNECTOR_PROXY_LOG_LEVEL", "").strip().upper() or Settings.log_level
    if level not in _LOG_LEVELS:
        msg = f"CONNECTOR_PROXY_LOG_LEVEL must be one of {', '.join(_LOG_LEVELS)}, got {level!r}"
        raise ValueError(msg)
    return level


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first when unset)."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        msg = f"{name} must be one of {', '.join(choices)}, got {value!r}"
        raise ValueError(msg)
    return value


def _bool(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    value = env.get(name, "").strip().lower()
    if not value:
        return default
    if value not in (*_TRUE, *_FALSE):
        msg = f"{name} must be true or false, got {value!r}"
        raise ValueError(msg)
    return value in _TRUE


def _list(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())

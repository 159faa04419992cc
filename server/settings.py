"""Configuration from the environment, read once at start-up into a frozen dataclass."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

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


_MAX_PORT = 65535
# gRPC's message limits are twice the body limit, and gRPC takes them as C ints.
_MAX_BODY_BYTES = 2**30


@dataclass(frozen=True)
class Settings:
    """Every setting the proxy reads; see the README's configuration table."""

    host: str = "127.0.0.1"
    port: int = 7004
    grpc_port: int = 50051
    api_key: str | None = None
    command_timeout: float = 40.0
    max_body_bytes: int = 32 * 1024 * 1024
    path_prefix: str = ""
    connector_packages: tuple[str, ...] = ("connectors",)
    grpc_targets: tuple[str, ...] = ()
    shutdown_grace: float = 30.0
    log_level: str = "INFO"

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
        prefix = env.get("CONNECTOR_PROXY_PATH_PREFIX", "").rstrip("/")
        if prefix and not prefix.startswith("/"):
            prefix = "/" + prefix
        return cls(
            host=env.get("CONNECTOR_PROXY_HOST", cls.host),
            port=_int(env, "CONNECTOR_PROXY_PORT", cls.port, 0, _MAX_PORT),
            grpc_port=_int(env, "CONNECTOR_PROXY_GRPC_PORT", cls.grpc_port, 0, _MAX_PORT),
            api_key=api_key,
            command_timeout=timeout,
            max_body_bytes=_int(
                env, "CONNECTOR_PROXY_MAX_BODY_BYTES", cls.max_body_bytes, 1, _MAX_BODY_BYTES
            ),
            path_prefix=prefix,
            connector_packages=_list(env.get("CONNECTOR_PROXY_CONNECTORS")) or cls.connector_packages,
            grpc_targets=_list(env.get("CONNECTOR_PROXY_GRPC_TARGETS")),
            shutdown_grace=grace,
            log_level=env.get("CONNECTOR_PROXY_LOG_LEVEL", cls.log_level).upper(),
        )


def _list(raw: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (raw or "").split(",") if part.strip())

"""Which gRPC servers to front, and how to reach each: ``CONNECTOR_PROXY_GRPC_TARGETS`` and the
``CONNECTOR_PROXY_UPSTREAM_*`` settings."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from server.wire import API_KEY_METADATA

__all__ = ["UpstreamConfig", "env_name", "parse_upstreams"]

_PREFIX = "CONNECTOR_PROXY_UPSTREAM_"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_METADATA_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_TLS_FILES = ("CA_FILE", "CERT_FILE", "KEY_FILE", "SERVER_NAME")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class UpstreamConfig:
    """One gRPC server whose connectors the proxy serves.

    ``metadata`` (sent with every call, e.g. an ``authorization`` bearer token or the upstream
    proxy's API key) is kept out of ``repr`` so that it never reaches a log.
    """

    name: str
    target: str  # host:port, as grpc understands it
    tls: bool = False
    ca_file: str | None = None  # PEM roots to verify the server with; the system's when unset
    cert_file: str | None = None  # PEM client certificate (mTLS), with key_file
    key_file: str | None = None
    server_name: str | None = None  # the name to verify the server's certificate against
    metadata: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def address(self) -> str:
        """The target as written in the settings, with its scheme: what logs and errors show."""
        return f"{'grpcs' if self.tls else 'grpc'}://{self.target}"


def env_name(name: str) -> str:
    """How a name (an upstream's, a connector's) appears in setting names: ``postgres_v2`` →
    ``POSTGRES_V2``."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _default_name(target: str) -> str:
    # A valid name for any address: an IPv6 one starts with "[", a host name may be long.
    return re.sub(r"[^A-Za-z0-9.-]", "_", target).lstrip("_.-")[:63]


def _flag(raw: str, variable: str) -> bool:
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    msg = f"{variable} must be true or false, got {raw!r}"
    raise ValueError(msg)


def _one(spec: str, env: Mapping[str, str]) -> UpstreamConfig:
    name, _, rest = spec.rpartition("=")
    target = rest.strip()
    scheme, sep, host_port = target.partition("://")
    if not sep:
        scheme, host_port = "", target
    if scheme not in ("", "grpc", "grpcs") or not host_port or "/" in host_port:
        msg = (
            f"CONNECTOR_PROXY_GRPC_TARGETS: {spec!r} is not a target; write host:port, grpc://host:port "
            "or grpcs://host:port (TLS), optionally named: name=grpcs://host:port"
        )
        raise ValueError(msg)
    name = name.strip() or _default_name(host_port)
    if not _NAME.match(name) or env_name(name) == "METADATA":
        msg = f"CONNECTOR_PROXY_GRPC_TARGETS: the name {name!r} may hold letters, digits, '_', '.' and '-'"
        raise ValueError(msg)
    own = f"{_PREFIX}{env_name(name)}_"

    def setting(key: str) -> str | None:
        # The target's own variable, else the one for every target.
        for variable in (own + key, _PREFIX + key):
            value = env.get(variable, "").strip()
            if value:
                return value
        return None

    tls_raw = setting("TLS")
    tls_flag = tls_raw is not None and _flag(tls_raw, f"{own}TLS")
    # A scheme written in the target wins over the TLS flag.
    tls = scheme == "grpcs" or (scheme == "" and tls_flag)
    if not tls:
        # TLS files set for every target concern the TLS ones; this target's own must not be set.
        own_files = [own + key for key in _TLS_FILES if env.get(own + key, "").strip()]
        if own_files:
            msg = f"{', '.join(own_files)}: set for {name}, which is not TLS; write grpcs://{host_port}"
            raise ValueError(msg)
        ca_file = cert_file = key_file = server_name = None
    else:
        cert_file, key_file = setting("CERT_FILE"), setting("KEY_FILE")
        if (cert_file is None) != (key_file is None):
            msg = f"{own}CERT_FILE and {own}KEY_FILE go together (a client certificate and its key)"
            raise ValueError(msg)
        ca_file, server_name = setting("CA_FILE"), setting("SERVER_NAME")
    metadata = _metadata(env, own)
    api_key = setting("API_KEY")
    if api_key is not None:
        metadata[API_KEY_METADATA] = api_key
    return UpstreamConfig(
        name=name,
        target=host_port,
        tls=tls,
        ca_file=ca_file,
        cert_file=cert_file,
        key_file=key_file,
        server_name=server_name,
        metadata=tuple(sorted(metadata.items())),
    )


def _metadata(env: Mapping[str, str], own: str) -> dict[str, str]:
    """``<prefix>METADATA_<KEY>=value`` pairs (``_`` in the key becomes ``-``), the target's own
    ones replacing those for every target."""
    found: dict[str, str] = {}
    for prefix in (_PREFIX + "METADATA_", own + "METADATA_"):
        for variable, value in env.items():
            if not variable.startswith(prefix) or not value.strip():
                continue
            key = variable.removeprefix(prefix).lower().replace("_", "-")
            if not _METADATA_KEY.match(key) or key.startswith("grpc-") or key.endswith("-bin"):
                msg = f"{variable}: {key!r} cannot be sent as gRPC metadata"
                raise ValueError(msg)
            found[key] = value.strip()
    return found


def parse_upstreams(env: Mapping[str, str]) -> tuple[UpstreamConfig, ...]:
    """The gRPC servers of ``CONNECTOR_PROXY_GRPC_TARGETS``, each with its settings.

    Raises:
        ValueError: a malformed target, a name used twice, or inconsistent TLS settings.
    """
    raw = env.get("CONNECTOR_PROXY_GRPC_TARGETS", "")
    configs = [_one(part.strip(), env) for part in raw.split(",") if part.strip()]
    seen: set[str] = set()
    for config in configs:
        key = env_name(config.name)
        if key in seen:
            msg = f"CONNECTOR_PROXY_GRPC_TARGETS: two targets are named {config.name!r}; name them apart"
            raise ValueError(msg)
        seen.add(key)
    return tuple(configs)

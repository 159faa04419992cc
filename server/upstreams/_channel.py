"""The channel to one upstream: TLS (custom roots, client certificate), keepalive, fast reconnects."""

from __future__ import annotations

import json

import grpc

from server.security import read_pem
from server.upstreams._config import UpstreamConfig
from server.wire import grpc_options

__all__ = ["open_channel"]

# Reconnect soon after a restarted server is back (gRPC's defaults wait up to 120 s); the
# upstream's own loop paces its attempts (Upstream, with backoff up to a few seconds). Not
# grpc.min_reconnect_backoff_ms: gRPC also uses it as the connection timeout.
_RECONNECT_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
    # A lost server makes the channel resolve the name again: learn of its replacement within a
    # second, not gRPC's default 30 s.
    ("grpc.dns_min_time_between_resolutions_ms", 1000),
]

# A target that resolves to several addresses (a DNS name with several records, such as a
# Kubernetes headless Service, or ipv4:a:p,b:q) is several servers of one schema: calls go round
# robin over the connected ones. Not the channel's own health checking as well: its health
# watches could not carry the upstream's metadata (credentials included), which every call does.
# A draining server still serves; once it closes its connection, it gets no more calls.
_SERVICE_CONFIG = json.dumps({"loadBalancingConfig": [{"round_robin": {}}]})


def credentials(config: UpstreamConfig) -> grpc.ChannelCredentials | None:
    """TLS credentials for a ``grpcs://`` upstream (``None`` for plaintext).

    Raises:
        ValueError: a certificate file cannot be read.
    """
    if not config.tls:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=read_pem(config.ca_file, "CA file") if config.ca_file else None,
        private_key=read_pem(config.key_file, "client key file") if config.key_file else None,
        certificate_chain=read_pem(config.cert_file, "client certificate file") if config.cert_file else None,
    )


def open_channel(config: UpstreamConfig, *, max_message_bytes: int, keepalive: float) -> grpc.aio.Channel:
    """A grpc.aio channel to ``config.target``; call it inside the event loop that will use it.

    ``keepalive`` seconds between HTTP/2 pings on an idle connection (0: none): a connection that
    stops answering is noticed and replaced, instead of holding calls until their deadline.
    """
    options: list[tuple[str, int | str]] = [
        *grpc_options(max_message_bytes),
        *_RECONNECT_OPTIONS,
        ("grpc.service_config", _SERVICE_CONFIG),
    ]
    if keepalive > 0:
        options += [
            ("grpc.keepalive_time_ms", int(keepalive * 1000)),
            ("grpc.keepalive_timeout_ms", 20_000),
            ("grpc.http2.max_pings_without_data", 0),
        ]
    if config.server_name:
        options.append(("grpc.ssl_target_name_override", config.server_name))
    creds = credentials(config)
    if creds is None:
        return grpc.aio.insecure_channel(config.target, options=options)
    return grpc.aio.secure_channel(config.target, creds, options=options)

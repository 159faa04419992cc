"""Connectors on other gRPC servers, in any language: their schema read by reflection and kept
current, their calls made over one channel each, and one routing of local and remote commands."""

from __future__ import annotations

from server.upstreams._config import UpstreamConfig, env_name, parse_upstreams
from server.upstreams._federation import Federation
from server.upstreams._reflection import INFRASTRUCTURE, DiscoveryError, Schema, read_schema
from server.upstreams._upstream import UNAVAILABLE_ERROR_CODE, Upstream, UpstreamState, logs_of

__all__ = [
    "INFRASTRUCTURE",
    "UNAVAILABLE_ERROR_CODE",
    "DiscoveryError",
    "Federation",
    "Schema",
    "Upstream",
    "UpstreamConfig",
    "UpstreamState",
    "env_name",
    "logs_of",
    "parse_upstreams",
    "read_schema",
]

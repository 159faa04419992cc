"""spiff-arena's connector-proxy HTTP dialect, built from protobuf descriptors.

The shim turns a catalogue of gRPC services into ``/v1/commands``, ``/v1/auths`` and
``/openapi.json``, and transcodes ``POST /v1/do/<connector>/<Command>`` into calls of an
:class:`~server.invocation.Invoker`. It defines what it needs of a job backend (the ``Job*``
names here) for long-running commands; the backends live in :mod:`jobs`.
"""

from __future__ import annotations

from rest_shim._auth_flow import AuthFlow
from rest_shim._catalog import Catalogue, CommandSpec
from rest_shim._jobs import (
    CannotRedeliver,
    JobBackend,
    JobState,
    JobsUnavailable,
    JobView,
    NewJob,
    Submitted,
)
from rest_shim._proxy_options import PROXY_PREFIX, ProxyOptions, prefers_async, split_proxy_options
from rest_shim.app import create_app, metrics_exposition, replace_catalogue

__all__ = [
    "PROXY_PREFIX",
    "AuthFlow",
    "CannotRedeliver",
    "Catalogue",
    "CommandSpec",
    "JobBackend",
    "JobState",
    "JobView",
    "JobsUnavailable",
    "NewJob",
    "ProxyOptions",
    "Submitted",
    "create_app",
    "metrics_exposition",
    "prefers_async",
    "replace_catalogue",
    "split_proxy_options",
]

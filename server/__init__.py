"""The gRPC side of the proxy: hosting connectors, and the API connector modules use.

A connector module imports from here: the errors to raise, ``log`` for ``spiff__logs``,
and ``json_values`` to read and write free-form JSON parameters and results.
"""

from __future__ import annotations

from server import errors, json_values
from server.invocation import log

__all__ = ["errors", "json_values", "log"]

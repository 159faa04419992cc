"""The gRPC side of the proxy: hosting connectors, and the API connector modules use.

A connector module imports from here: the errors to raise, ``log`` for ``spiff__logs``,
``json_values`` to read and write free-form JSON parameters and results, and ``run_blocking`` for
blocking work (it runs in the connector's own bounded pool, :mod:`server.bulkheads`).
"""

from __future__ import annotations

from server import errors, json_values
from server.bulkheads import run_blocking
from server.invocation import log

__all__ = ["errors", "json_values", "log", "run_blocking"]

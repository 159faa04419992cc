"""The gRPC side of the proxy: hosting connectors, and the API connector modules use.

A connector module imports from here: the errors to raise, ``log`` for ``spiff__logs``,
``json_values`` to read and write free-form JSON parameters and results, ``run_blocking`` for
blocking work (it runs in the connector's own bounded pool, :mod:`server.bulkheads`), and
``access_token`` to read a token-set parameter (``FieldOptions.auth``; :mod:`server.oauth`) and
``refresh_refused_token`` to get a new one when the upstream refuses it.
"""

from __future__ import annotations

from server import errors, json_values
from server.bulkheads import run_blocking
from server.invocation import log
from server.oauth import access_token, refresh_refused_token

__all__ = ["access_token", "errors", "json_values", "log", "refresh_refused_token", "run_blocking"]

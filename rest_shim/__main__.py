"""``python -m rest_shim`` runs the REST shim alone, in front of ``CONNECTOR_PROXY_GRPC_TARGETS``."""

from __future__ import annotations

from rest_shim.serve import run_shim
from server.settings import Settings

run_shim(Settings.from_env())

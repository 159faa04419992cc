"""``python -m server`` runs the embedded proxy; ``python -m server --grpc-only`` the gRPC server alone."""

from __future__ import annotations

import argparse

from server.serve import run_embedded, run_grpc
from server.settings import Settings

parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
parser.add_argument("--grpc-only", action="store_true", help="serve gRPC only, without the REST shim")
args = parser.parse_args()
settings = Settings.from_env()
if args.grpc_only:
    run_grpc(settings)
else:
    run_embedded(settings)

"""``connector-proxy``, the command line for people: list and call a proxy's commands (over REST or
its gRPC port), see its jobs and upstreams, and scaffold a new connector.

It sits at the top layer with the processes, so it reuses the shim's decoder and catalogue for gRPC
calls; the REST commands need nothing but the standard library and click.
"""

from __future__ import annotations

from connector_proxy.cli._app import cli

__all__ = ["cli", "main"]


def main() -> None:
    """The console script ``connector-proxy`` (and ``python -m connector_proxy.cli``)."""
    cli(prog_name="connector-proxy")

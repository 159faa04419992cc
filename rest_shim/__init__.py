"""The REST shim: spiff-arena's connector-proxy HTTP API, built from protobuf descriptors."""

from __future__ import annotations

from rest_shim._catalog import Catalogue, CommandSpec
from rest_shim._remote import RemoteInvoker, Router, fetch_services
from rest_shim.app import create_app

__all__ = ["Catalogue", "CommandSpec", "RemoteInvoker", "Router", "create_app", "fetch_services"]

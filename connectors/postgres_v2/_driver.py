"""What the servicer uses of the modules that import psycopg and psycopg_pool (about 11 MiB and
160 ms): ``_service`` imports this module with its first call, so that discovery loads no driver."""

from __future__ import annotations

from psycopg import Error

from ._connections import Pools, parse_target
from ._errors import command_error
from ._statements import DIALECT
from ._values import rows

__all__ = ["DIALECT", "Error", "Pools", "command_error", "parse_target", "rows"]

"""What the servicer uses of the modules that import aiomysql and PyMySQL (about 10 MiB and 70 ms):
``_service`` imports this module with its first call, so that discovery loads no driver."""

from __future__ import annotations

from typing import Any

import aiomysql  # type: ignore[import-untyped]
from pymysql.err import Error  # type: ignore[import-untyped]

from server import log

from ._connections import Pools, parse_target
from ._errors import command_error, error_code

__all__ = ["Error", "LoggingCursor", "Pools", "command_error", "error_code", "parse_target"]


class LoggingCursor(aiomysql.Cursor):  # type: ignore[misc]
    """MySQL's warnings go to spiff__logs, where aiomysql would raise them as Python warnings."""

    async def _show_warnings(self, conn: Any) -> None:
        if self._result and self._result.has_next:
            return
        for level, code, message in await conn.show_warnings() or ():
            log(f"{level} {code}: {message}")

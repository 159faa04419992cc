"""The mysql connector: MySQL and MariaDB tables and SQL over aiomysql,
one pool per server and user."""

from __future__ import annotations

from ._service import MysqlService as MysqlService

__all__ = ["MysqlService"]

"""The real MariaDB (or MySQL) the mysql tests use: a database and a password-bearing user of their own.

The server is the machine's (CI starts it): 127.0.0.1:3306, root with an empty password
(override with MYSQL_TEST_ADMIN_URI, ``mysql://user:password@host:port``). When the server
cannot be reached the tests fail, with a message that says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import pymysql  # type: ignore[import-untyped]
import pytest

ADMIN_URI = os.environ.get("MYSQL_TEST_ADMIN_URI", "mysql://root:@127.0.0.1:3306")


def _admin(database: str | None = None) -> Any:
    parts = urlsplit(ADMIN_URI)
    try:
        return pymysql.connect(
            host=parts.hostname,
            port=parts.port or 3306,
            user=unquote(parts.username or "root"),
            password=unquote(parts.password or ""),
            database=database,
            autocommit=True,
            connect_timeout=5,
        )
    except pymysql.err.OperationalError as exc:
        pytest.fail(
            f"MariaDB/MySQL is not reachable at {parts.hostname}:{parts.port} ({exc}). The mysql tests "
            "need the machine's MariaDB on 127.0.0.1:3306 (root, empty password); .ci/run starts it.",
            pytrace=False,
        )


@dataclass(frozen=True)
class Database:
    """A throwaway database and a user with a password that may use it."""

    name: str
    user: str
    password: str

    @property
    def dsn(self) -> str:
        """A key=value connection string carrying the password."""
        return f"host=127.0.0.1 port=3306 database={self.name} user={self.user} password={self.password}"

    @property
    def uri(self) -> str:
        """The same as a URI."""
        return f"mysql://{self.user}:{self.password}@127.0.0.1:3306/{self.name}"

    def query(self, text: str, *params: object) -> list[tuple[Any, ...]]:
        """Runs a statement as the admin in this database; the rows, if any."""
        conn = _admin(self.name)
        try:
            with conn.cursor() as cursor:
                cursor.execute(text, params or None)
                return list(cursor.fetchall())
        finally:
            conn.close()


@contextmanager
def scratch_database() -> Iterator[Database]:
    """Creates a database and a user with a password (unique names), and drops both afterwards."""
    suffix = uuid.uuid4().hex[:12]
    database = Database(f"spiff_my_{suffix}", f"spiff_my_u_{suffix}", f"pw-{uuid.uuid4().hex}")
    conn = _admin()
    try:
        with conn.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE `{database.name}`")
            cursor.execute(f"CREATE USER '{database.user}'@'%%' IDENTIFIED BY %s", [database.password])
            cursor.execute(f"GRANT ALL ON `{database.name}`.* TO '{database.user}'@'%'")
        yield database
    finally:
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{database.name}`")
            cursor.execute(f"DROP USER IF EXISTS '{database.user}'@'%'")
        conn.close()

"""The real PostgreSQL the postgres_v2 tests use: a database and a password-bearing role of their own.

The server is the machine's (CI starts it): 127.0.0.1:5432 with trust authentication, reached as
``postgres`` (override the admin connection string with POSTGRES_TEST_ADMIN_DSN). A trust server
accepts any password, which is all the leak tests need: they search for the password they sent.
When the server cannot be reached the tests fail, with a message that says so.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
import pytest
from psycopg import sql

ADMIN_DSN = os.environ.get(
    "POSTGRES_TEST_ADMIN_DSN", "host=127.0.0.1 port=5432 user=postgres dbname=postgres"
)


@dataclass(frozen=True)
class Database:
    """A throwaway database and a role with a password that owns it."""

    name: str
    role: str
    password: str

    @property
    def dsn(self) -> str:
        """A key=value connection string carrying the password."""
        return f"host=127.0.0.1 port=5432 dbname={self.name} user={self.role} password={self.password}"

    @property
    def uri(self) -> str:
        """The same as a URI."""
        return f"postgresql://{self.role}:{self.password}@127.0.0.1:5432/{self.name}"

    def query(self, text: str, *params: object) -> list[tuple[object, ...]]:
        """Runs a statement as the admin in this database; the rows, if any."""
        with psycopg.connect(ADMIN_DSN, dbname=self.name, autocommit=True) as conn:
            cursor = conn.execute(text.encode(), params or None)
            return cursor.fetchall() if cursor.description else []

    def count(self, table: str) -> int:
        """The number of rows in a table of this database."""
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(table))
        with psycopg.connect(ADMIN_DSN, dbname=self.name) as conn:
            row = conn.execute(query).fetchone()
        assert row is not None
        return int(row[0])


def _admin() -> psycopg.Connection[tuple[object, ...]]:
    try:
        return psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable with {ADMIN_DSN!r} ({exc}). The postgres_v2 tests need the "
            "machine's PostgreSQL on 127.0.0.1:5432 with trust authentication; .ci/run starts it.",
            pytrace=False,
        )


@contextmanager
def scratch_database() -> Iterator[Database]:
    """Creates a database and a role with a password (unique names), and drops both afterwards."""
    suffix = uuid.uuid4().hex[:12]
    database = Database(f"spiff_pg_{suffix}", f"spiff_pg_role_{suffix}", f"pw-{uuid.uuid4().hex}")
    with _admin() as admin:
        role, name = sql.Identifier(database.role), sql.Identifier(database.name)
        admin.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(database.password))
        )
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, role))
    try:
        yield database
    finally:
        with _admin() as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(role))

"""The postgres_v2 connector: PostgreSQL tables and SQL over psycopg 3's asyncio API,
one pool per database."""

from __future__ import annotations

from ._service import PostgresV2Service as PostgresV2Service

__all__ = ["PostgresV2Service"]

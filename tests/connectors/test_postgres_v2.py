"""The postgres_v2 connector against the machine's real PostgreSQL, through the shim on both paths."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.postgres_v2.v1 import postgres_v2_pb2 as pb, postgres_v2_pb2_grpc

from connectors.postgres_v2 import PostgresV2Service
from server import errors, json_values
from server.invocation import LocalContext
from tests.conftest import client_for
from tests.connectors.commands import Commands
from tests.connectors.postgres_server import Database, scratch_database

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def db() -> Any:
    with scratch_database() as database:
        yield database


@pytest.fixture
def table(db: Database) -> str:
    """A fresh table name (the tests share one database)."""
    return f"t_{uuid.uuid4().hex[:10]}"


COMMANDS = Commands("postgres_v2")
call, ok, fails = COMMANDS.call, COMMANDS.ok, COMMANDS.fails


async def make_invoices(client: httpx.AsyncClient, db: Database, table: str) -> None:
    columns = [
        {"name": "id", "type": "serial PRIMARY KEY"},
        {"name": "customer", "type": "varchar(40) NOT NULL"},
        {"name": "amount", "type": "numeric(12, 2)"},
        {"name": "paid", "type": "boolean DEFAULT false"},
    ]
    body = await ok(
        client,
        "CreateTableV2",
        database_connection_str=db.dsn,
        table_name=table,
        schema={"column_definitions": columns},
    )
    assert body == {"result": "ok"}
    rows = [["ACME", 12.5], ["Initech", 3], ["Hooli", None]]
    body = await ok(
        client,
        "InsertValuesV2",
        database_connection_str=db.dsn,
        table_name=table,
        schema={"columns": ["customer", "amount"], "values": rows},
    )
    assert body == {"result": "3 rows affected", "rowcount": 3}


async def test_every_table_command(proxy, db, table):
    await make_invoices(proxy, db, table)
    status, payload = await call(
        proxy,
        "SelectValuesV2",
        database_connection_str=db.dsn,
        table_name=table,
        schema={"columns": ["id", "customer", "amount", "paid"], "where": [["amount", ">", 1]]},
    )
    assert status == 200
    assert payload["command_response"] == {
        "body": [[1, "ACME", 12.5, False], [2, "Initech", 3, False]],
        "mimetype": "application/json",
        "http_status": 200,
        "headers": {},
    }
    logs = payload["spiff__logs"]
    assert logs[-2] == f'SELECT "id", "customer", "amount", "paid" FROM "{table}" WHERE "amount" > %s'  # noqa: S608 - the test's own table
    assert re.fullmatch(r"-> 2 rows in \d+ ms", logs[-1])

    body = await ok(
        proxy,
        "UpdateValuesV2",
        database_connection_str=db.dsn,
        table_name=table,
        schema={"set": {"paid": True, "amount": "7.25"}, "where": [["customer", "!=", "ACME"]]},
    )
    assert body == {"result": "2 rows affected", "rowcount": 2}
    body = await ok(
        proxy,
        "DeleteValuesV2",
        database_connection_str=db.dsn,
        table_name=table,
        schema={"where": [["customer", "=", "Hooli"]]},
    )
    assert body == {"result": "1 rows affected", "rowcount": 1}
    rows = await ok(proxy, "SelectValuesV2", database_connection_str=db.dsn, table_name=table, schema={})
    assert sorted(rows) == [[1, "ACME", 12.5, False], [2, "Initech", 7.25, True]]

    body = await ok(proxy, "DropTableV2", database_connection_str=db.dsn, table_name=table)
    assert body == {"result": "ok"}
    assert db.query("SELECT to_regclass(%s)", table) == [(None,)]
    # Both are idempotent, as CREATE ... IF NOT EXISTS and DROP ... IF EXISTS; the notice is logged.
    status, payload = await call(proxy, "DropTableV2", database_connection_str=db.dsn, table_name=table)
    assert status == 200
    assert f'NOTICE: table "{table}" does not exist, skipping' in payload["spiff__logs"]


async def test_update_and_delete_without_where_touch_every_row(proxy, db, table):
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    status, payload = await call(proxy, "UpdateValuesV2", **common, schema={"set": {"paid": True}})
    assert (status, payload["command_response"]["body"]["rowcount"]) == (200, 3)
    assert "No where: every row is updated." in payload["spiff__logs"]
    status, payload = await call(proxy, "DeleteValuesV2", **common, schema={"where": []})
    assert (status, payload["command_response"]["body"]["rowcount"]) == (200, 3)
    assert "No where: every row is deleted." in payload["spiff__logs"]


async def test_select_as_objects_with_order_limit_and_offset(proxy, db, table):
    await make_invoices(proxy, db, table)
    rows = await ok(
        proxy,
        "SelectValuesV2",
        database_connection_str=db.dsn,
        table_name=table,
        rows_as_objects=True,
        schema={"columns": ["*"], "order_by": [["amount", "desc"], "id"], "limit": 2, "offset": 1},
    )
    # NULLs sort first in descending order.
    assert rows == [
        {"id": 1, "customer": "ACME", "amount": 12.5, "paid": False},
        {"id": 2, "customer": "Initech", "amount": 3, "paid": False},
    ]


WHERE_CASES: list[tuple[str, list[list[Any]], list[str]]] = [
    ("eq", [["amount", "=", 3]], ["Initech"]),
    ("ne", [["amount", "!=", 3]], ["ACME"]),
    ("ne-sql", [["amount", "<>", 3]], ["ACME"]),
    ("lt", [["amount", "<", 12.5]], ["Initech"]),
    ("le", [["amount", "<=", 12.5]], ["ACME", "Initech"]),
    ("gt", [["amount", ">", 3]], ["ACME"]),
    ("ge", [["amount", ">=", 3]], ["ACME", "Initech"]),
    ("like", [["customer", "like", "%o%"]], ["Hooli"]),
    ("not-like", [["customer", "NOT LIKE", "%o%"]], ["ACME", "Initech"]),
    ("ilike", [["customer", "ilike", "a%"]], ["ACME"]),
    ("not-ilike", [["customer", "not ilike", "a%"]], ["Hooli", "Initech"]),
    ("in", [["customer", "in", ["ACME", "Hooli", "x"]]], ["ACME", "Hooli"]),
    ("not-in", [["customer", "not in", ["ACME"]]], ["Hooli", "Initech"]),
    ("in-empty", [["customer", "in", []]], []),
    ("not-in-empty", [["customer", "not in", []]], ["ACME", "Hooli", "Initech"]),
    ("is-null", [["amount", "is", None]], ["Hooli"]),
    ("eq-null-is-null", [["amount", "=", None]], ["Hooli"]),
    ("is-not-null", [["amount", "is not", None]], ["ACME", "Initech"]),
    ("ne-null-is-not-null", [["amount", "!=", None]], ["ACME", "Initech"]),
    ("is-false-and", [["paid", "is", False], ["amount", ">", 5]], ["ACME"]),
]


async def test_where_operators(proxy, db, table):
    await make_invoices(proxy, db, table)
    for case, where, expected in WHERE_CASES:
        rows = await ok(
            proxy,
            "SelectValuesV2",
            database_connection_str=db.dsn,
            table_name=table,
            schema={"columns": ["customer"], "where": where, "order_by": ["customer"]},
        )
        assert rows == [[name] for name in expected], case


async def test_values_round_trip_as_json(proxy, db, table):
    columns = {
        "n": "numeric",
        "f": "double precision",
        "ts": "timestamp",
        "tstz": "timestamptz",
        "d": "date",
        "u": "uuid",
        "b": "bytea",
        "j": "jsonb",
        "js": "json",
        "a": "integer[]",
        "i": "interval",
        "ip": "inet",
        "big": "bigint",
        "inf": "timestamptz",
        "bc": "date",
    }
    schema = {"column_definitions": [{"name": k, "type": v} for k, v in columns.items()]}
    common = {"database_connection_str": db.dsn, "table_name": table}
    await ok(proxy, "CreateTableV2", **common, schema=schema)
    the_uuid = str(uuid.uuid4())
    document = {"nested": {"list": [1, 2.5, None, "x"]}, "big": 2**70}
    values = [
        "0.1000000000000000000001",
        0.5,
        "2026-01-02 03:04:05.123",
        "2026-01-02T03:04:05+02:00",
        "2026-01-02",
        the_uuid,
        "\\x68656c6c6f",
        document,
        {"a": 1},
        [1, 2, 3],
        "1 day 2 hours",
        "10.0.0.1",
        2**62,
        "infinity",
        "0044-03-15 BC",
    ]
    await ok(proxy, "InsertValuesV2", **common, schema={"columns": list(columns), "values": [values]})
    await ok(proxy, "InsertValuesV2", **common, schema={"columns": ["n", "f"], "values": [["12.50", "NaN"]]})
    rows = await ok(proxy, "SelectValuesV2", **common, schema={"order_by": ["n"]}, rows_as_objects=True)
    assert rows[0] == {
        "n": "0.1000000000000000000001",  # more digits than a JSON number keeps: its text
        "f": 0.5,
        "ts": "2026-01-02T03:04:05.123000",
        "tstz": "2026-01-02T01:04:05+00:00",
        "d": "2026-01-02",
        "u": the_uuid,
        "b": "aGVsbG8=",
        "j": document,
        "js": {"a": 1},
        "a": [1, 2, 3],
        "i": 93600.0,
        "ip": "10.0.0.1",
        "big": 2**62,
        "inf": "infinity",  # beyond Python's datetime: PostgreSQL's text
        "bc": "0044-03-15 BC",
    }
    assert rows[1] == {name: None for name in columns} | {"n": 12.5, "f": "NaN"}


async def test_table_name_injection_is_just_a_name(proxy, db, table):
    await make_invoices(proxy, db, table)
    evil = f"x; DROP TABLE {table}; --"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("SelectValuesV2", {"schema": {}}),
        ("InsertValuesV2", {"schema": {"columns": ["a"], "values": [[1]]}}),
        ("UpdateValuesV2", {"schema": {"set": {"a": 1}}}),
        ("DeleteValuesV2", {"schema": {"where": [["a", "=", 1]]}}),
    ]
    for command, extra in calls:
        payload = await fails(
            proxy, command, 404, "UndefinedTable", database_connection_str=db.dsn, table_name=evil, **extra
        )
        assert payload["error"]["message"] == f'relation "{evil}" does not exist.'
    # Created, it is a table with that odd name, which drops again; the real table never moved.
    common = {"database_connection_str": db.dsn, "table_name": evil}
    await ok(proxy, "CreateTableV2", **common, schema={"column_definitions": [{"name": "a", "type": "int"}]})
    assert db.query("SELECT count(*) FROM pg_class WHERE relname = %s", evil) == [(1,)]
    await ok(proxy, "DropTableV2", **common)
    assert db.count(table) == 3


COLUMN_INJECTIONS: list[tuple[str, dict[str, Any], str]] = [
    ("SelectValuesV2", {"columns": ["customer, (SELECT 1)"]}, "columns"),
    ("SelectValuesV2", {"where": [["1=1 OR customer", "=", "x"]]}, "where"),
    ("SelectValuesV2", {"order_by": ["(SELECT 1)"]}, "order_by"),
    ("InsertValuesV2", {"columns": ['customer") VALUES (1); --'], "values": [["x"]]}, "columns"),
    ("UpdateValuesV2", {"set": {"paid = true, amount": 0}}, "set"),
    ("DeleteValuesV2", {"where": [["customer = customer OR id", "=", 1]]}, "where"),
]


async def test_column_name_injection_is_just_a_name(proxy, db, table):
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    for command, schema, _ in COLUMN_INJECTIONS:
        payload = await fails(proxy, command, 404, "UndefinedColumn", **common, schema=schema)
        assert payload["error"]["message"].startswith("column "), payload
    rows = await ok(
        proxy, "SelectValuesV2", **common, schema={"columns": ["amount", "paid"], "order_by": ["id"]}
    )
    assert rows == [[12.5, False], [3, False], [None, False]]


async def test_identifiers_fold_like_unquoted_sql_unless_quoted(proxy, db, table):
    common = {"database_connection_str": db.dsn}
    mixed = table.upper()
    await ok(
        proxy,
        "CreateTableV2",
        **common,
        table_name=mixed,
        schema={"column_definitions": [{"name": "Val", "type": "int"}]},
    )
    await ok(
        proxy, "InsertValuesV2", **common, table_name=table, schema={"columns": ["VAL"], "values": [[1]]}
    )
    assert db.query("SELECT relname FROM pg_class WHERE relname ILIKE %s", table) == [(table,)]
    # Quoted, the case is kept; qualified with the schema, it is the same table.
    quoted = f'"{mixed}"'
    await ok(
        proxy,
        "CreateTableV2",
        **common,
        table_name=quoted,
        schema={"column_definitions": [{"name": '"Val"', "type": "int"}]},
    )
    await ok(
        proxy,
        "InsertValuesV2",
        **common,
        table_name=f"public.{quoted}",
        schema={"columns": ['"Val"'], "values": [[2]]},
    )
    rows = await ok(proxy, "SelectValuesV2", **common, table_name=quoted, schema={}, rows_as_objects=True)
    assert rows == [{"Val": 2}]
    rows = await ok(
        proxy, "SelectValuesV2", **common, table_name=f"PUBLIC.{mixed}", schema={}, rows_as_objects=True
    )
    assert rows == [{"val": 1}]


@pytest.mark.parametrize(
    ("declared", "rebuilt"),
    [
        ("text", "text"),
        ("  Character  Varying(255)  ", "Character Varying(255)"),
        ("numeric(10,2) not null", "numeric(10, 2) NOT NULL"),
        ("timestamp(3) with time zone default now()", "timestamp(3) with time zone DEFAULT now()"),
        ("int[] NULL", "int[] NULL"),
        ("text[3]", "text[3]"),
        (
            "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
            "bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
        ),
        ("uuid default gen_random_uuid() unique", "uuid DEFAULT gen_random_uuid() UNIQUE"),
        ("text default 'it''s'", "text DEFAULT 'it''s'"),
        ("integer default -1", "integer DEFAULT -1"),
        ("date default current_date", "date DEFAULT CURRENT_DATE"),
        ("int references other(id) on delete set null", "int REFERENCES other(id) ON DELETE SET NULL"),
    ],
)
def test_column_types_are_rebuilt_from_the_grammar(declared, rebuilt):
    from connectors.postgres_v2._types import column_type as _column_type

    bad: list[errors.Violation] = []
    assert _column_type(declared, "type", bad) == rebuilt
    assert bad == []


UNSAFE_TYPES = [
    "int; DROP TABLE x",
    "int) ; --",
    "int -- comment",
    "int /* x */",
    "text DEFAULT pg_sleep(1)",
    "text DEFAULT 'a' || current_user",
    "int CHECK (a > 0)",
    "int CONSTRAINT c NOT NULL",
    'text COLLATE "C"',
    "text DEFAULT E'\\x'",
    "numeric(1.5)",
    "varchar(n)",
    "int PRIMARY",
    "NOT NULL",
    "",
    42,
    None,
]


async def test_unsafe_column_types_are_refused(proxy, db, table):
    for declared in UNSAFE_TYPES:
        payload = await fails(
            proxy,
            "CreateTableV2",
            400,
            "InvalidParameters",
            database_connection_str=db.dsn,
            table_name=table,
            schema={"column_definitions": [{"name": "a", "type": declared}]},
        )
        assert payload["error"]["message"] == "Invalid parameters: schema.column_definitions[0].type."
    assert db.query("SELECT to_regclass(%s)", table) == [(None,)]


BAD_PARAMETERS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("CreateTableV2", {"table_name": "t", "schema": {}}, ["schema.column_definitions"]),
    (
        "CreateTableV2",
        {"table_name": "t", "schema": {"column_definitions": [{"type": "int"}, "x"]}},
        ["schema.column_definitions[0].name", "schema.column_definitions[1]"],
    ),
    (
        "InsertValuesV2",
        {"table_name": "t", "schema": {"columns": ["a", "b"], "values": [[1]]}},
        ["schema.values[0]"],
    ),
    (
        "InsertValuesV2",
        {"table_name": "t", "schema": {"columns": [], "values": "x"}},
        ["schema.columns", "schema.values"],
    ),
    (
        "SelectValuesV2",
        {"table_name": "t", "schema": {"where": [["a", "~", 1], ["b", "="]]}},
        ["schema.where[0][1]", "schema.where[1]"],
    ),
    (
        "SelectValuesV2",
        {"table_name": "t", "schema": {"where": [["a", "in", 1], ["b", "is", 3]]}},
        ["schema.where[0][2]", "schema.where[1][2]"],
    ),
    (
        "SelectValuesV2",
        {"table_name": "t", "schema": {"order_by": [["a", "up"]], "limit": -1, "offset": "x"}},
        ["schema.order_by[0]", "schema.limit", "schema.offset"],
    ),
    ("SelectValuesV2", {"table_name": "t", "schema": [1]}, ["schema"]),
    ("UpdateValuesV2", {"table_name": "t", "schema": {"set": {}}}, ["schema.set"]),
    ("DeleteValuesV2", {"table_name": "t", "schema": {"where": "a = 1"}}, ["schema.where"]),
    (
        "DoSQL",
        {"schema": {"sql": " ", "values": 3, "fetch_results": "yes"}},
        ["schema.sql", "schema.values", "schema.fetch_results"],
    ),
    (
        "DoSQL",
        {"schema": {"sql": "SELECT 1"}, "statement_timeout_ms": 0},
        ["statement_timeout_ms must be at least 1"],  # its declared minimum, checked by the server
    ),
    (
        "DoSQL",
        {"database_connection_str": "postgresql://u:pw@[bad/db", "schema": {"sql": "SELECT 1"}},
        ["database_connection_str"],
    ),
]


async def test_bad_parameters_are_reported_together(proxy, db):
    for command, params, fields in BAD_PARAMETERS:
        payload = await fails(
            proxy, command, 400, "InvalidParameters", **({"database_connection_str": db.dsn} | params)
        )
        assert payload["error"]["message"] in (
            f"Invalid parameters: {', '.join(fields)}.",
            f"Invalid parameters for postgres_v2/{command}: {', '.join(fields)}.",
            "database_connection_str is not a libpq connection string (key=value ...) or postgresql:// URI.",
        )


DATABASE_ERRORS = [
    ("SELEC 1", None, 400, "SyntaxError"),
    ("SELECT * FROM no_such_table", None, 404, "UndefinedTable"),
    ("SELECT no_such_column FROM pg_class", None, 404, "UndefinedColumn"),
    ("SELECT no_such_function()", None, 404, "UndefinedFunction"),
    ("SELECT 'x'::integer", None, 400, "InvalidTextRepresentation"),
    ("SELECT 1 / 0", None, 400, "DivisionByZero"),
    ("SELECT %s, %s", [1], 400, "ProgrammingError"),
    ("CREATE DATABASE x", None, 400, "ActiveSqlTransaction"),
    ("DO $$ BEGIN RAISE EXCEPTION 'custom'; END $$", None, 400, "RaiseException"),
    ("SELECT * FROM pg_authid", None, 403, "InsufficientPrivilege"),
]


async def test_database_errors_keep_the_psycopg_class_name(proxy, db):
    for sql, values, status, code in DATABASE_ERRORS:
        await fails(
            proxy,
            "DoSQL",
            status,
            code,
            database_connection_str=db.dsn,
            schema={"sql": sql, "values": values},
        )


async def test_constraint_violations(proxy, db, table):
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    payload = await fails(
        proxy,
        "InsertValuesV2",
        409,
        "UniqueViolation",
        **common,
        schema={"columns": ["id", "customer"], "values": [[1, "x"]]},
    )
    assert payload["error"]["message"] == (
        f'duplicate key value violates unique constraint "{table}_pkey". Key (id)=(1) already exists.'
    )
    await fails(
        proxy,
        "InsertValuesV2",
        400,
        "NotNullViolation",
        **common,
        schema={"columns": ["amount"], "values": [[1]]},
    )
    # The transaction rolled back: the good row before the bad one is not there either.
    await fails(
        proxy,
        "InsertValuesV2",
        409,
        "UniqueViolation",
        **common,
        schema={"columns": ["id", "customer"], "values": [[9, "ok"], [1, "dup"]]},
    )
    assert db.count(table) == 3


async def test_do_sql(proxy, db, table):
    common = {"database_connection_str": db.dsn}
    body = await ok(proxy, "DoSQL", **common, schema={"sql": f"CREATE TABLE {table} (k text, v jsonb)"})
    assert body == {"result": "ok"}
    body = await ok(
        proxy,
        "DoSQL",
        **common,
        schema={
            "sql": f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)",  # noqa: S608 - the test's own table
            "values": ["a", {"x": [1]}, "b%", None],
        },
    )
    assert body == {"result": "2 rows affected", "rowcount": 2}
    rows = await ok(
        proxy,
        "DoSQL",
        **common,
        schema={
            "sql": f"SELECT k, v FROM {table} WHERE k = %(k)s",  # noqa: S608 - the test's own table
            "values": {"k": "a"},
            "fetch_results": True,
        },
    )
    assert rows == [["a", {"x": [1]}]]
    # Without values, % is plain text and several statements run; the last one's result counts.
    rows = await ok(
        proxy,
        "DoSQL",
        **common,
        rows_as_objects=True,
        schema={
            "sql": f"UPDATE {table} SET v = '1'; SELECT k FROM {table} WHERE k LIKE 'b%'",  # noqa: S608 - the test's own table
            "fetch_results": True,
        },
    )
    assert rows == [{"k": "b%"}]
    status, payload = await call(
        proxy,
        "DoSQL",
        **common,
        schema={"sql": f"DELETE FROM {table}", "fetch_results": True},  # noqa: S608 - the test's own table
    )
    assert (status, payload["command_response"]["body"]) == (200, [])
    assert "The statement returned no rows to fetch." in payload["spiff__logs"]
    body = await ok(proxy, "DoSQL", **common, schema={"sql": f"SELECT * FROM {table}"})  # noqa: S608 - the test's own table
    assert body == {"result": "0 rows affected", "rowcount": 0}


async def test_statement_timeout_cancels_the_query(proxy, db):
    started = time.monotonic()
    payload = await fails(
        proxy,
        "DoSQL",
        504,
        "QueryCanceled",
        database_connection_str=db.dsn,
        statement_timeout_ms=200,
        schema={"sql": "SELECT pg_sleep(5)"},
    )
    assert time.monotonic() - started < 2
    assert payload["error"]["message"] == (
        "canceling statement due to statement timeout. (statement_timeout_ms, or the call's deadline)"
    )
    assert payload["command_response"]["http_status"] == 504


async def test_the_call_deadline_bounds_the_statement_timeout(make_app, db):
    async with client_for(make_app(command_timeout=1.5)) as client:
        started = time.monotonic()
        await fails(
            client,
            "DoSQL",
            504,
            "QueryCanceled",
            database_connection_str=db.dsn,
            schema={"sql": "SELECT pg_sleep(5)"},
        )
    assert time.monotonic() - started < 1.5


async def test_the_pooled_connection_is_reused(proxy, db):
    pids = set()
    for _ in range(3):
        rows = await ok(
            proxy,
            "DoSQL",
            database_connection_str=db.dsn,
            schema={
                "sql": "SELECT pg_backend_pid(), current_setting('application_name')",
                "fetch_results": True,
            },
        )
        pids.add(rows[0][0])
        assert rows[0][1] == "spiff-connector-proxy"
    assert len(pids) == 1


async def test_a_broken_pooled_connection_is_replaced(proxy, db):
    request = {
        "database_connection_str": db.dsn,
        "schema": {"sql": "SELECT pg_backend_pid()", "fetch_results": True},
    }
    [[pid]] = await ok(proxy, "DoSQL", **request)
    assert db.query("SELECT pg_terminate_backend(%s, 2000)", pid) == [(True,)]  # waits for the exit
    [[other]] = await ok(proxy, "DoSQL", **request)
    assert other != pid


async def test_connection_refused_is_unavailable(proxy, closed_port):
    started = time.monotonic()
    payload = await fails(
        proxy,
        "SelectValuesV2",
        503,
        "OperationalError",
        database_connection_str=f"host=127.0.0.1 port={closed_port} dbname=x user=x",
        table_name="t",
        schema={},
    )
    assert time.monotonic() - started < 2
    assert "Connection refused" in payload["error"]["message"]
    assert "\n" not in payload["error"]["message"]


async def test_unknown_database_is_not_found(proxy, db):
    payload = await fails(
        proxy,
        "DoSQL",
        404,
        "OperationalError",
        database_connection_str=db.dsn.replace(f"dbname={db.name}", "dbname=no_such_database"),
        schema={"sql": "SELECT 1"},
    )
    assert 'database "no_such_database" does not exist' in payload["error"]["message"]


async def test_unknown_role_is_unauthenticated(proxy, db):
    await fails(
        proxy,
        "DoSQL",
        401,
        "OperationalError",
        database_connection_str=db.dsn.replace(f"user={db.role}", "user=no_such_role"),
        schema={"sql": "SELECT 1"},
    )


async def test_the_password_never_leaks(proxy, db, table, closed_port, caplog):
    caplog.set_level(logging.DEBUG)
    texts = []
    for conninfo in (db.dsn, db.uri):
        common = {"database_connection_str": conninfo}
        for command, params in [
            (
                "CreateTableV2",
                {"table_name": table, "schema": {"column_definitions": [{"name": "a", "type": "int"}]}},
            ),
            ("InsertValuesV2", {"table_name": table, "schema": {"columns": ["a"], "values": [[1]]}}),
            ("SelectValuesV2", {"table_name": table, "schema": {"where": [["a", "=", 1]]}}),
            ("SelectValuesV2", {"table_name": "missing", "schema": {}}),
            ("UpdateValuesV2", {"table_name": table, "schema": {"set": {"a": 2}}}),
            ("DeleteValuesV2", {"table_name": table, "schema": {}}),
            ("DoSQL", {"schema": {"sql": "SELEC"}}),
            ("DropTableV2", {"table_name": table}),
        ]:
            response = await proxy.post(f"/v1/do/postgres_v2/{command}", json=common | params)
            texts.append(response.text)
    failing = [
        db.dsn.replace("port=5432", f"port={closed_port}"),
        db.uri.replace(f"/{db.name}", "/no_such_database"),
        f"postgresql://{db.role}:{db.password}@[bad/x",
        f"host=127.0.0.1 password={db.password} junk",
    ]
    for conninfo in failing:
        response = await proxy.post(
            "/v1/do/postgres_v2/DoSQL",
            json={"database_connection_str": conninfo, "schema": {"sql": "SELECT 1"}},
        )
        assert response.status_code in (400, 404, 503), response.text
        texts.append(response.text)
    assert any("1 rows affected" in text for text in texts)
    for text in [*texts, caplog.text]:
        assert db.password not in text
        assert db.password.removeprefix("pw-") not in text


async def test_over_grpc(grpc_channel, db, table):
    stub = postgres_v2_pb2_grpc.PostgresV2ServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    dsn = db.dsn
    await stub.CreateTableV2(
        pb.CreateTableV2Request(
            database_connection_str=dsn,
            table_name=table,
            schema=json_values.dump({"column_definitions": [{"name": "x", "type": "numeric"}]}),
        ),
        timeout=10,
    )
    reply = await stub.InsertValuesV2(
        pb.InsertValuesV2Request(
            database_connection_str=dsn,
            table_name=table,
            schema=json_values.dump({"columns": ["x"], "values": [[1], [2.5]]}),
        ),
        timeout=10,
    )
    assert (reply.result, reply.rowcount) == ("2 rows affected", 2)
    reply = await stub.SelectValuesV2(
        pb.SelectValuesV2Request(
            database_connection_str=dsn, table_name=table, schema=json_values.dump({"order_by": ["x"]})
        ),
        timeout=10,
    )
    assert json_values.load(reply.body) == [[1], [2.5]]
    # Without a deadline, statement_timeout_ms alone bounds the statement.
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.DoSQL(
            pb.DoSQLRequest(
                database_connection_str=dsn,
                schema=json_values.dump({"sql": "SELECT pg_sleep(2)"}),
                statement_timeout_ms=100,
            )
        )
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SelectValuesV2(
            pb.SelectValuesV2Request(
                database_connection_str=dsn, table_name="nope", schema=json_values.dump({})
            ),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = status_pb2.Status.FromString(dict(raised.value.trailing_metadata())["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "UndefinedTable"


def local_context(seconds: float = 10) -> LocalContext:
    return LocalContext(time.monotonic() + seconds)


def select_pid(dsn: str) -> pb.DoSQLRequest:
    return pb.DoSQLRequest(
        database_connection_str=dsn,
        schema=json_values.dump({"sql": "SELECT pg_backend_pid()", "fetch_results": True}),
    )


async def test_pools_are_bounded_and_closed(db):
    service = PostgresV2Service(max_pools=1)
    tagged = [f"{db.dsn} application_name=spiff_{uuid.uuid4().hex[:8]}" for _ in range(2)]

    def connections(name: str) -> int:
        rows = db.query("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", name)
        return int(str(rows[0][0]))

    async def closed(name: str) -> bool:
        # A closed connection's server process leaves pg_stat_activity a moment after the
        # client hangs up, so allow it a little time (under load, more than none).
        for _ in range(50):
            if connections(name) == 0:
                return True
            await asyncio.sleep(0.05)
        return False

    try:
        await service.DoSQL(select_pid(tagged[0]), local_context())
        assert connections(tagged[0].rsplit("=", 1)[1]) == 1
        await service.DoSQL(select_pid(tagged[1]), local_context())
        # Beyond max_pools, the least recently used idle pool was closed.
        assert await closed(tagged[0].rsplit("=", 1)[1])
        assert connections(tagged[1].rsplit("=", 1)[1]) == 1
    finally:
        await service.aclose()
    assert await closed(tagged[1].rsplit("=", 1)[1])


async def test_a_busy_pool_times_out(db):
    service = PostgresV2Service(pool_size=1, connect_timeout=0.3)
    slow = pb.DoSQLRequest(
        database_connection_str=db.dsn, schema=json_values.dump({"sql": "SELECT pg_sleep(1)"})
    )
    try:
        await service.DoSQL(select_pid(db.dsn), local_context())  # opens the pool
        holder = asyncio.ensure_future(service.DoSQL(slow, local_context()))
        await asyncio.sleep(0.1)
        with pytest.raises(errors.ResourceExhausted) as raised:
            await service.DoSQL(select_pid(db.dsn), local_context())
        assert raised.value.error_code == "PoolTimeout"
        assert "pooled connections" in raised.value.message
        await holder
    finally:
        await service.aclose()


def test_configuration_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE", "3")
    monkeypatch.setenv("CONNECTOR_PROXY_POSTGRES_V2_MAX_POOLS", "2")
    monkeypatch.setenv("CONNECTOR_PROXY_POSTGRES_V2_CONNECT_TIMEOUT", "1.5")
    pools = PostgresV2Service()._pools
    assert (pools._size, pools._max_pools, pools._connect_timeout) == (3, 2, 1.5)
    pools = PostgresV2Service(pool_size=7)._pools
    assert pools._size == 7
    monkeypatch.setenv("CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE", "many")
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_POSTGRES_V2_POOL_SIZE must be a positive number"):
        PostgresV2Service()


async def test_commands_are_listed_with_secret_connection_strings(proxy):
    commands = {c["id"]: c for c in (await proxy.get("/v1/commands")).json()}
    ids = [i for i in commands if i.startswith("postgres_v2/")]
    assert sorted(ids) == sorted(
        f"postgres_v2/{name}"
        for name in (
            "CreateTableV2",
            "DropTableV2",
            "InsertValuesV2",
            "SelectValuesV2",
            "UpdateValuesV2",
            "DeleteValuesV2",
            "DoSQL",
        )
    )
    select = {p["id"]: p for p in commands["postgres_v2/SelectValuesV2"]["parameters"]}
    assert (select["database_connection_str"]["required"], select["database_connection_str"]["secret"]) == (
        True,
        True,
    )
    assert [
        select[name]["type"] for name in ("table_name", "schema", "rows_as_objects", "statement_timeout_ms")
    ] == [
        "str",
        "any",
        "bool",
        "int",
    ]
    assert "table_name" not in {p["id"] for p in commands["postgres_v2/DoSQL"]["parameters"]}
    assert json.dumps(commands["postgres_v2/DoSQL"])  # JSON-safe

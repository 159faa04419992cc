"""The mysql connector against the machine's real MariaDB, through the shim on both paths."""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.mysql.v1 import mysql_pb2 as pb, mysql_pb2_grpc

from connectors.mysql import MysqlService
from connectors.mysql._connections import parse_target as _target
from connectors.mysql._types import column_type as _column_type
from server import errors, json_values
from server.invocation import LocalContext
from tests.conftest import client_for
from tests.connectors.commands import Commands
from tests.connectors.mysql_server import ADMIN_URI, Database, scratch_database

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def db() -> Any:
    with scratch_database() as database:
        yield database


@pytest.fixture
def table(db: Database) -> str:
    """A fresh table name (the tests share one database)."""
    return f"t_{uuid.uuid4().hex[:10]}"


COMMANDS = Commands("mysql")
call, ok, fails = COMMANDS.call, COMMANDS.ok, COMMANDS.fails


async def make_invoices(client: httpx.AsyncClient, db: Database, table: str) -> None:
    columns = [
        {"name": "id", "type": "INT UNSIGNED AUTO_INCREMENT PRIMARY KEY"},
        {"name": "customer", "type": "VARCHAR(40) NOT NULL"},
        {"name": "amount", "type": "DECIMAL(12, 2)"},
        {"name": "paid", "type": "BOOLEAN DEFAULT FALSE"},
    ]
    common = {"database_connection_str": db.dsn, "table_name": table}
    assert await ok(client, "CreateTableV2", **common, schema={"column_definitions": columns}) == {
        "result": "ok"
    }
    rows = [["ACME", 12.5], ["Initech", 3], ["Hooli", None]]
    body = await ok(
        client, "InsertValuesV2", **common, schema={"columns": ["customer", "amount"], "values": rows}
    )
    assert body == {"result": "3 rows affected", "rowcount": 3}


async def test_every_table_command(proxy, db, table):
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    status, payload = await call(
        proxy,
        "SelectValuesV2",
        **common,
        schema={"columns": ["id", "customer", "amount", "paid"], "where": [["amount", ">", 1]]},
    )
    assert (status, payload["command_response"]["body"]) == (
        200,
        [[1, "ACME", 12.5, 0], [2, "Initech", 3, 0]],
    )
    logs = payload["spiff__logs"]
    assert logs[-2] == f"SELECT `id`, `customer`, `amount`, `paid` FROM `{table}` WHERE `amount` > %s"  # noqa: S608
    assert re.fullmatch(r"-> 2 rows in \d+ ms", logs[-1])
    body = await ok(
        proxy,
        "UpdateValuesV2",
        **common,
        schema={"set": {"paid": True, "amount": "7.25"}, "where": [["customer", "!=", "ACME"]]},
    )
    assert body == {"result": "2 rows affected", "rowcount": 2}
    body = await ok(proxy, "DeleteValuesV2", **common, schema={"where": [["customer", "=", "Hooli"]]})
    assert body == {"result": "1 rows affected", "rowcount": 1}
    rows = await ok(proxy, "SelectValuesV2", **common, schema={"order_by": ["id"]}, rows_as_objects=True)
    assert rows == [
        {"id": 1, "customer": "ACME", "amount": 12.5, "paid": 0},
        {"id": 2, "customer": "Initech", "amount": 7.25, "paid": 1},
    ]
    assert await ok(proxy, "DropTableV2", **common) == {"result": "ok"}
    status, payload = await call(proxy, "DropTableV2", **common)
    assert status == 200
    assert f"Note 1051: Unknown table '{db.name}.{table}'" in payload["spiff__logs"]


WHERE_CASES: list[tuple[str, list[list[Any]], list[str]]] = [
    ("eq", [["amount", "=", 3]], ["Initech"]),
    ("ne", [["amount", "<>", 3]], ["ACME"]),
    ("le", [["amount", "<=", 12.5]], ["ACME", "Initech"]),
    ("ge", [["amount", ">=", 3], ["amount", "<", 12]], ["Initech"]),
    ("like", [["customer", "like", "%o%"]], ["Hooli"]),
    ("not-like", [["customer", "not like", "%o%"]], ["ACME", "Initech"]),
    ("ilike", [["customer", "ilike", "a%"]], ["ACME"]),
    ("not-ilike", [["customer", "not ilike", "a%"]], ["Hooli", "Initech"]),
    ("in", [["customer", "in", ["ACME", "Hooli", "x"]]], ["ACME", "Hooli"]),
    ("not-in", [["customer", "not in", ["ACME"]]], ["Hooli", "Initech"]),
    ("in-empty", [["customer", "in", []]], []),
    ("not-in-empty", [["customer", "not in", []]], ["ACME", "Hooli", "Initech"]),
    ("eq-null", [["amount", "=", None]], ["Hooli"]),
    ("is-not-null", [["amount", "is not", None]], ["ACME", "Initech"]),
    ("is-false", [["paid", "is", False], ["amount", ">", 5]], ["ACME"]),
]


async def test_where_operators_order_and_limit(proxy, db, table):
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    for case, where, expected in WHERE_CASES:
        rows = await ok(
            proxy,
            "SelectValuesV2",
            **common,
            schema={"columns": ["customer"], "where": where, "order_by": ["customer"]},
        )
        assert rows == [[name] for name in expected], case
    rows = await ok(
        proxy,
        "SelectValuesV2",
        **common,
        schema={"columns": ["id"], "order_by": [["id", "desc"]], "offset": 1},
    )
    assert rows == [[2], [1]]
    rows = await ok(
        proxy,
        "SelectValuesV2",
        **common,
        schema={"columns": ["id"], "order_by": ["id"], "limit": 1, "offset": 1},
    )
    assert rows == [[2]]


async def test_values_round_trip_as_json(proxy, db, table):
    columns = {
        "n": "DECIMAL(30, 22)",
        "f": "DOUBLE",
        "dt": "DATETIME(3)",
        "d": "DATE",
        "tm": "TIME",
        "j": "JSON",
        "b": "BLOB",
        "s": "SET('a', 'b', 'c')",
        "e": "ENUM('x', 'y')",
        "big": "BIGINT UNSIGNED",
        "t": "TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin COMMENT '100% text'",
    }
    common = {"database_connection_str": db.dsn, "table_name": table}
    await ok(
        proxy,
        "CreateTableV2",
        **common,
        schema={"column_definitions": [{"name": k, "type": v} for k, v in columns.items()]},
    )
    document = {"nested": {"list": [1, 2.5, None, "x"]}}
    values = [
        "0.1000000000000000000001",
        0.5,
        "2026-01-02 03:04:05.123",
        "2026-01-02",
        "12:34:56",
        document,
        "hi",
        "c,a",
        "y",
        2**64 - 1,
        "héllo 🎉",
    ]
    await ok(
        proxy,
        "InsertValuesV2",
        **common,
        schema={"columns": list(columns), "values": [values, [None] * len(columns)]},
    )
    rows = await ok(
        proxy, "SelectValuesV2", **common, schema={"order_by": [["n", "desc"]]}, rows_as_objects=True
    )
    assert rows[0] == {
        "n": "0.1000000000000000000001",
        "f": 0.5,
        "dt": "2026-01-02T03:04:05.123000",
        "d": "2026-01-02",
        "tm": 45296.0,
        "j": '{"nested":{"list":[1,2.5,null,"x"]}}',  # MariaDB's JSON is text
        "b": "aGk=",
        "s": "a,c",
        "e": "y",
        "big": 2**64 - 1,
        "t": "héllo 🎉",
    }
    assert rows[1] == dict.fromkeys(columns)


async def test_injection_in_names_is_just_a_name(proxy, db, table):
    await make_invoices(proxy, db, table)
    evil = f"x`; DROP TABLE {table}; --"
    payload = await fails(
        proxy,
        "SelectValuesV2",
        404,
        "UndefinedTable",
        database_connection_str=db.dsn,
        table_name=evil,
        schema={},
    )
    assert payload["error"]["message"] == f"Table '{db.name}.{evil}' doesn't exist (MySQL error 1146)"
    common = {"database_connection_str": db.dsn, "table_name": table}
    for command, schema in [
        ("SelectValuesV2", {"columns": ["customer`, (SELECT 1)"]}),
        ("SelectValuesV2", {"where": [["1=1 OR customer", "=", "x"]]}),
        ("InsertValuesV2", {"columns": ["customer`) VALUES (1); --"], "values": [["x"]]}),
        ("UpdateValuesV2", {"set": {"paid = 1, amount": 0}}),
        ("DeleteValuesV2", {"where": [["customer = customer OR id", "=", 1]]}),
        ("SelectValuesV2", {"columns": ["50%s"]}),
    ]:
        payload = await fails(proxy, command, 404, "UndefinedColumn", **common, schema=schema)
        assert payload["error"]["message"].startswith("Unknown column "), payload
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(3,)]  # noqa: S608
    # Created, an odd name is just a table with that name, which drops again.
    odd = {"database_connection_str": db.dsn, "table_name": "odd; name `x` 100%"}
    await ok(proxy, "CreateTableV2", **odd, schema={"column_definitions": [{"name": "a%b`c", "type": "INT"}]})
    await ok(proxy, "InsertValuesV2", **odd, schema={"columns": ["a%b`c"], "values": [[1]]})
    assert await ok(proxy, "SelectValuesV2", **odd, schema={}, rows_as_objects=True) == [{"a%b`c": 1}]
    await ok(proxy, "DropTableV2", **odd)


@pytest.mark.parametrize(
    ("declared", "rebuilt"),
    [
        ("int", "int"),
        ("INT UNSIGNED AUTO_INCREMENT PRIMARY KEY", "INT UNSIGNED AUTO_INCREMENT PRIMARY KEY"),
        ("decimal(10,2) not null", "decimal(10, 2) NOT NULL"),
        ("character varying(20) character set utf8mb4", "character varying(20) CHARACTER SET utf8mb4"),
        ("enum('a','b''c') default 'a'", "enum('a', 'b''c') DEFAULT 'a'"),
        (
            "timestamp(3) default current_timestamp(3) on update now(3)",
            "timestamp(3) DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE NOW(3)",
        ),
        ("varchar(9) comment '50%'", "varchar(9) COMMENT '50%%'"),
        ("int references other(id) on delete set null", "int REFERENCES other(id) ON DELETE SET NULL"),
        ("varchar(5) unique key collate utf8mb4_bin", "varchar(5) UNIQUE KEY COLLATE utf8mb4_bin"),
    ],
)
def test_column_types_are_rebuilt_from_the_grammar(declared, rebuilt):
    bad: list[errors.Violation] = []
    assert _column_type(declared, "type", bad) == rebuilt
    assert bad == []


UNSAFE_TYPES = [
    "int; DROP TABLE x",
    "int) ; --",
    "int -- c",
    "int # c",
    "int /* c */",
    "text DEFAULT (SELECT 1)",
    "int DEFAULT sleep(1)",
    "int CHECK (a > 0)",
    "int AS (1) STORED",
    "varchar(9) COMMENT 'a\\' OR 1'",
    "enum('a', 1)",
    "decimal(1, 2, 3)",
    "NOT NULL",
    "",
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
        assert payload["error"]["message"] == "Invalid parameters: schema.column_definitions[0].type.", (
            declared
        )
    assert db.query("SHOW TABLES LIKE %s", table) == []


DATABASE_ERRORS: list[tuple[str, list[Any] | None, int, str]] = [
    ("SELEC 1", None, 400, "SyntaxError"),
    ("SELECT * FROM no_such_table", None, 404, "UndefinedTable"),
    ("SELECT no_such_column", None, 404, "UndefinedColumn"),
    ("SELECT no_such_function()", None, 404, "UndefinedFunction"),
    ("SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'custom'", None, 400, "RaiseException"),
    ("SELECT * FROM mysql.user", None, 403, "InsufficientPrivilege"),
    ("SELECT %s, %s", [1], 400, "ProgrammingError"),
]


async def test_database_errors(proxy, db, table):
    for sql, values, status, code in DATABASE_ERRORS:
        await fails(
            proxy,
            "DoSQL",
            status,
            code,
            database_connection_str=db.dsn,
            schema={"sql": sql, "values": values},
        )
    await make_invoices(proxy, db, table)
    common = {"database_connection_str": db.dsn, "table_name": table}
    payload = await fails(
        proxy,
        "InsertValuesV2",
        409,
        "UniqueViolation",
        **common,
        schema={"columns": ["id", "customer"], "values": [[9, "ok"], [1, "dup"]]},
    )
    assert payload["error"]["message"] == "Duplicate entry '1' for key 'PRIMARY' (MySQL error 1062)"
    assert db.query(f"SELECT COUNT(*) FROM `{table}`") == [(3,)]  # noqa: S608 - rolled back: no row 9
    await fails(
        proxy,
        "InsertValuesV2",
        400,
        "NotNullViolation",
        **common,
        schema={"columns": ["customer"], "values": [[None]]},
    )
    await fails(
        proxy,
        "InsertValuesV2",
        400,
        "InvalidTextRepresentation",
        **common,
        schema={"columns": ["customer", "amount"], "values": [["x", "abc"]]},
    )
    await fails(proxy, "CreateTableV2", 400, "InvalidParameters", **common, schema={"column_definitions": []})


async def test_do_sql(proxy, db, table):
    common = {"database_connection_str": db.dsn}
    assert await ok(proxy, "DoSQL", **common, schema={"sql": f"CREATE TABLE {table} (k TEXT, v JSON)"}) == {
        "result": "0 rows affected",
        "rowcount": 0,
    }
    body = await ok(
        proxy,
        "DoSQL",
        **common,
        schema={
            "sql": f"INSERT INTO {table} VALUES (%s, %s), (%s, %s)",  # noqa: S608 - the test's table
            "values": ["a", {"x": [1]}, "b%", None],
        },
    )
    assert body == {"result": "2 rows affected", "rowcount": 2}
    rows = await ok(
        proxy,
        "DoSQL",
        **common,
        schema={
            "sql": f"SELECT k, v FROM {table} WHERE k = %(k)s",  # noqa: S608 - the test's table
            "values": {"k": "a"},
            "fetch_results": True,
        },
    )
    assert rows == [["a", '{"x":[1]}']]
    rows = await ok(
        proxy,
        "DoSQL",
        **common,
        rows_as_objects=True,
        schema={"sql": f"SELECT k FROM {table} WHERE k LIKE 'b%'", "fetch_results": True},  # noqa: S608
    )
    assert rows == [{"k": "b%"}]
    status, payload = await call(
        proxy,
        "DoSQL",
        **common,
        schema={"sql": f"DELETE FROM {table}", "fetch_results": True},  # noqa: S608
    )
    assert (status, payload["command_response"]["body"]) == (200, [])
    assert "The statement returned no rows to fetch." in payload["spiff__logs"]


async def test_statement_timeout_cancels_the_query(proxy, db):
    started = time.monotonic()
    payload = await fails(
        proxy,
        "DoSQL",
        504,
        "QueryCanceled",
        database_connection_str=db.dsn,
        statement_timeout_ms=200,
        schema={"sql": "SELECT SLEEP(5)"},
    )
    assert time.monotonic() - started < 2
    assert (
        payload["error"]["message"]
        == "Query execution was interrupted (max_statement_time exceeded) (MySQL error 1969)"
    )


async def test_the_call_deadline_bounds_the_statement_timeout(make_app, db):
    async with client_for(make_app(command_timeout=1.5)) as client:
        started = time.monotonic()
        await fails(
            client,
            "DoSQL",
            504,
            "QueryCanceled",
            database_connection_str=db.dsn,
            schema={"sql": "SELECT SLEEP(5)"},
        )
    assert time.monotonic() - started < 1.5


async def test_the_pooled_connection_is_reused_and_replaced_when_broken(proxy, db):
    request = {
        "database_connection_str": db.dsn,
        "schema": {"sql": "SELECT CONNECTION_ID()", "fetch_results": True},
    }
    ids = {(await ok(proxy, "DoSQL", **request))[0][0] for _ in range(3)}
    assert len(ids) == 1
    db.query(f"KILL {ids.pop()}")
    await asyncio.sleep(0.1)
    assert len(await ok(proxy, "DoSQL", **request)) == 1


async def test_connection_failures(proxy, db, closed_port):
    started = time.monotonic()
    sql = {"sql": "SELECT 1"}
    payload = await fails(
        proxy,
        "DoSQL",
        503,
        "OperationalError",
        database_connection_str=f"host=127.0.0.1 port={closed_port} user=x",
        schema=sql,
    )
    assert time.monotonic() - started < 2
    assert payload["error"]["message"] == "Can't connect to MySQL server on '127.0.0.1' (MySQL error 2003)"
    # The admin learns that a database does not exist; a user only that it is not theirs.
    await fails(
        proxy, "DoSQL", 404, "OperationalError", database_connection_str=f"{ADMIN_URI}/nope", schema=sql
    )
    await fails(
        proxy,
        "DoSQL",
        403,
        "OperationalError",
        database_connection_str=db.dsn.replace(f"database={db.name}", "database=nope"),
        schema=sql,
    )
    payload = await fails(
        proxy,
        "DoSQL",
        401,
        "OperationalError",
        database_connection_str=db.dsn.replace(db.password, "wrong"),
        schema=sql,
    )
    assert "Access denied" in payload["error"]["message"]


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
            ("SelectValuesV2", {"table_name": "missing", "schema": {}}),
            ("DoSQL", {"schema": {"sql": "SELEC"}}),
            ("DropTableV2", {"table_name": table}),
        ]:
            texts.append((await proxy.post(f"/v1/do/mysql/{command}", json=common | params)).text)
    for conninfo in [
        db.dsn.replace("port=3306", f"port={closed_port}"),
        db.uri.replace(f"/{db.name}", "/nope"),
        f"mysql://{db.user}:{db.password}@127.0.0.1:notaport/x",
        f"host=127.0.0.1 password={db.password} junk",
        f"postgresql://u:{db.password}@h/x",
    ]:
        response = await proxy.post(
            "/v1/do/mysql/DoSQL", json={"database_connection_str": conninfo, "schema": {"sql": "SELECT 1"}}
        )
        assert response.status_code in (400, 403, 404, 503), response.text
        texts.append(response.text)
    assert any("1 rows affected" in text for text in texts)
    for text in [*texts, caplog.text]:
        assert db.password not in text


def test_connection_strings():
    target = _target("mysql://u%40x:p%2Fw@db.example:3307/app?charset=utf8&ssl=true")
    assert (
        target.options["user"],
        target.options["password"],
        target.options["host"],
        target.options["port"],
    ) == ("u@x", "p/w", "db.example", 3307)
    assert (target.options["db"], target.options["charset"], target.where) == (
        "app",
        "utf8",
        'database "app" on db.example:3307',
    )
    assert "ssl" in target.options
    assert "p%2Fw" in target.secrets
    assert "p/w" in target.secrets
    target = _target("host=h user=u password='a b\\'c' dbname=d")
    assert (target.options["password"], target.options["db"], target.options["port"]) == ("a b'c", "d", 3306)
    for bad in [
        "",
        "host=h nonsense=1",
        "mysql://h:99999/x",
        "host=h port=x",
        "http://h/x",
        "host=h ssl=maybe",
    ]:
        with pytest.raises(errors.InvalidParameters):
            _target(bad)


async def test_over_grpc(grpc_channel, db, table):
    stub = mysql_pb2_grpc.MysqlServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    await stub.CreateTableV2(
        pb.CreateTableV2Request(
            database_connection_str=db.dsn,
            table_name=table,
            schema=json_values.dump({"column_definitions": [{"name": "x", "type": "DOUBLE"}]}),
        ),
        timeout=10,
    )
    reply = await stub.InsertValuesV2(
        pb.InsertValuesV2Request(
            database_connection_str=db.dsn,
            table_name=table,
            schema=json_values.dump({"columns": ["x"], "values": [[1], [2.5]]}),
        ),
    )
    assert (reply.result, reply.rowcount) == ("2 rows affected", 2)
    reply = await stub.SelectValuesV2(
        pb.SelectValuesV2Request(
            database_connection_str=db.dsn, table_name=table, schema=json_values.dump({"order_by": ["x"]})
        ),
        timeout=10,
    )
    assert json_values.load(reply.body) == [[1.0], [2.5]]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SelectValuesV2(
            pb.SelectValuesV2Request(
                database_connection_str=db.dsn, table_name="nope", schema=json_values.dump({})
            ),
            timeout=10,
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = status_pb2.Status.FromString(dict(raised.value.trailing_metadata())["grpc-status-details-bin"])
    info = error_details_pb2.ErrorInfo()
    status.details[0].Unpack(info)
    assert info.reason == "UndefinedTable"


def select_id(dsn: str, sql: str = "SELECT CONNECTION_ID()") -> pb.DoSQLRequest:
    return pb.DoSQLRequest(
        database_connection_str=dsn, schema=json_values.dump({"sql": sql, "fetch_results": True})
    )


async def test_pools_are_bounded_busy_and_closed(db):
    def connections(user: str) -> int:
        return int(
            db.query("SELECT COUNT(*) FROM information_schema.processlist WHERE user = %s", user)[0][0]
        )

    service = MysqlService(max_pools=1, pool_size=1, connect_timeout=0.3)
    other = db.uri + "?charset=utf8mb4"
    try:
        await service.DoSQL(select_id(db.dsn), LocalContext(time.monotonic() + 10))
        assert connections(db.user) == 1
        await service.DoSQL(select_id(other), LocalContext(time.monotonic() + 10))
        await asyncio.sleep(0.1)
        assert connections(db.user) == 1  # the first pool was closed
        holder = asyncio.ensure_future(
            service.DoSQL(select_id(other, "SELECT SLEEP(1)"), LocalContext(time.monotonic() + 10))
        )
        await asyncio.sleep(0.1)
        with pytest.raises(errors.ResourceExhausted) as raised:
            await service.DoSQL(select_id(other), LocalContext(time.monotonic() + 10))
        assert raised.value.error_code == "PoolTimeout"
        await holder
    finally:
        await service.aclose()
    await asyncio.sleep(0.1)
    assert connections(db.user) == 0


def test_configuration_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_MYSQL_POOL_SIZE", "3")
    monkeypatch.setenv("CONNECTOR_PROXY_MYSQL_MAX_POOLS", "2")
    monkeypatch.setenv("CONNECTOR_PROXY_MYSQL_CONNECT_TIMEOUT", "1.5")
    pools = MysqlService()._pools
    assert (pools._size, pools._max_pools, pools._connect_timeout) == (3, 2, 1.5)
    monkeypatch.setenv("CONNECTOR_PROXY_MYSQL_MAX_POOLS", "0")
    with pytest.raises(ValueError, match="CONNECTOR_PROXY_MYSQL_MAX_POOLS must be a positive number"):
        MysqlService()

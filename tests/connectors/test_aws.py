"""The aws connector against a moto server on loopback, through the shim on both execution paths.

Some tests configure the connector the standard AWS way (environment variables, a config-file
profile), others per call (endpoint_url, region, keys). Every test starts from an empty AWS
configuration: no credentials, no config files, no instance metadata, one attempt per call.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import logging
import re
import time
from typing import Any

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2, status_pb2
from spiff.connector.aws.v1 import aws_pb2, aws_pb2_grpc

from connectors.aws import AwsService
from connectors.aws._budget import Fit, backoff_bound, coarse_budget, fit
from server import errors, json_values
from server.invocation import LocalContext
from tests.connectors.aws_moto import REGION, MotoServer, unique
from tests.connectors.commands import Commands
from tests.connectors.smtp_target import SilentServer

pytestmark = pytest.mark.anyio

KEY_ID = "AKIDPERCALL"
SECRET = "per-call-S3cr3t-Key-0123456789"
TOKEN = "per-call-Session-Token-abcdef0123"
COMMANDS = [
    "AddDynamoItem",
    "QueryDynamoTable",
    "ScanDynamoTable",
    "UploadFileData",
    "GetFileData",
    "GetPresignedUrl",
]
_AWS_VARIABLES = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS",
    "AWS_RETRY_MODE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_ROLE_ARN",
    "CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES",
    "CONNECTOR_PROXY_AWS_ENDPOINT_URLS",
)


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture(autouse=True)
def empty_aws_configuration(monkeypatch, tmp_path):
    for name in _AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # a refused connection fails at once


@pytest.fixture
def aws_env(monkeypatch, moto):
    """The standard configuration: endpoint, keys and region from the environment."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)


@pytest.fixture
def per_call(moto, monkeypatch) -> dict[str, str]:
    """The per-call configuration: the same endpoint, keys and region as parameters (the endpoint
    allowed by the operator, as per-call endpoints must be)."""
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", moto.endpoint)
    return {
        "endpoint_url": moto.endpoint,
        "region": REGION,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
    }


call = Commands("aws").call


async def ok(client: httpx.AsyncClient, command: str, **params: Any) -> Any:
    """The body of a successful call."""
    status, payload = await call(client, command, **params)
    assert (status, payload["error"]) == (200, None), payload
    assert payload["command_response"]["mimetype"] == "application/json"
    return payload["command_response"]["body"]


async def fails(client: httpx.AsyncClient, command: str, **params: Any) -> tuple[int, str, str]:
    """The HTTP status, error_code and message of a failed call."""
    status, payload = await call(client, command, **params)
    assert payload["error"] is not None, payload
    return status, payload["error"]["error_code"], payload["error"]["message"]


def data_url(content: bytes, media_type: str = "application/octet-stream", name: str = "file.bin") -> str:
    return f"data:{media_type};name={name};base64,{base64.b64encode(content).decode()}"


async def test_commands_are_listed_with_their_parameters(proxy):
    commands = {c["id"]: c for c in (await proxy.get("/v1/commands")).json()}
    assert {f"aws/{name}" for name in COMMANDS} <= set(commands)
    add = {p["id"]: p for p in commands["aws/AddDynamoItem"]["parameters"]}
    assert (add["table_name"]["type"], add["table_name"]["required"]) == ("str", True)
    assert (add["item_data"]["type"], add["item_data"]["required"]) == ("any", True)
    query = [p["id"] for p in commands["aws/QueryDynamoTable"]["parameters"]]
    assert query[:3] == ["table_name", "partition_key", "sort_key"]
    upload = [p["id"] for p in commands["aws/UploadFileData"]["parameters"]]
    assert upload[:3] == ["file_data", "bucket", "object_name"]
    for name in COMMANDS:
        parameters = {p["id"]: p for p in commands[f"aws/{name}"]["parameters"]}
        assert parameters["aws_secret_access_key"]["secret"] is True
        assert parameters["aws_session_token"]["secret"] is True
        assert not parameters["region"].get("required")


# --- DynamoDB ---------------------------------------------------------------------------------

MOVIE = {
    "year": 1982,
    "title": "Blade Runner",
    "rating": 8.1,
    "info": {"budget": 28.5, "scores": [9.5, 7, {"deep": 0.1}], "big": 12345678901234567890123},
    "released": True,
    "sequel": None,
    "tags": ["neo-noir", ""],
}


async def test_items_keep_their_numbers_exact_nested_ones_too(proxy, moto, aws_env):
    table = moto.create_table(unique("movies"), ("year", "N"), ("title", "S"))
    status, payload = await call(proxy, "AddDynamoItem", table_name=table, item_data=MOVIE)
    assert (status, payload["error"], payload["command_response"]["body"]) == (200, None, {})
    first, second = payload["spiff__logs"]
    assert first == f"PutItem into table {table!r} at {moto.endpoint} ({REGION})"
    assert re.fullmatch(r"-> done after \d+ ms", second)
    stored = moto.dynamodb.get_item(
        TableName=table, Key={"year": {"N": "1982"}, "title": {"S": "Blade Runner"}}
    )
    item = stored["Item"]
    assert item["rating"] == {"N": "8.1"}
    assert item["info"]["M"]["budget"] == {"N": "28.5"}
    assert item["info"]["M"]["scores"]["L"][2] == {"M": {"deep": {"N": "0.1"}}}
    assert item["info"]["M"]["big"] == {"N": "12345678901234567890123"}
    body = await ok(proxy, "ScanDynamoTable", table_name=table)
    assert body == {"Items": [MOVIE], "Count": 1, "ScannedCount": 1}
    found = body["Items"][0]
    assert (type(found["year"]), type(found["rating"]), type(found["info"]["big"])) == (int, float, int)


async def test_values_other_programs_wrote_come_back_as_json(proxy, moto, aws_env):
    table = moto.create_table(unique("typed"), ("id", "S"))
    moto.dynamodb.put_item(
        TableName=table,
        Item={
            "id": {"S": "a"},
            "blob": {"B": b"\x00\xff"},
            "words": {"SS": ["pear", "apple"]},
            "numbers": {"NS": ["10", "-1.5", "2"]},
            "blobs": {"BS": [b"\x02", b"\x01"]},
            "precise": {"N": "0.1000000000000000000001"},
            "nothing": {"NULL": True},
            "flag": {"BOOL": False},
        },
    )
    body = await ok(proxy, "ScanDynamoTable", table_name=table)
    assert body["Items"] == [
        {
            "id": "a",
            "blob": "AP8=",
            "words": ["apple", "pear"],
            "numbers": [-1.5, 2, 10],
            "blobs": ["AQ==", "Ag=="],
            "precise": "0.1000000000000000000001",
            "nothing": None,
            "flag": False,
        }
    ]


@pytest.mark.parametrize(
    ("item_data", "problem"),
    [
        pytest.param([1, 2], "item_data must be a JSON object", id="not-an-object"),
        pytest.param({"id": "a", "n": 10**40 + 1}, "item_data has a number DynamoDB cannot", id="41-digits"),
        pytest.param({"id": "a", "n": 1e-200}, "item_data has a number DynamoDB cannot", id="too-small"),
    ],
)
async def test_items_dynamodb_cannot_store_are_invalid_parameters(proxy, aws_env, item_data, problem):
    status, code, message = await fails(proxy, "AddDynamoItem", table_name="any-table", item_data=item_data)
    assert (status, code) == (400, "InvalidParameters")
    assert problem in message


async def test_overwrite_false_keeps_an_existing_item(proxy, moto, aws_env):
    table = moto.create_table(unique("once"), ("id", "S"))
    await ok(proxy, "AddDynamoItem", table_name=table, item_data={"id": "a", "v": 1})
    status, code, message = await fails(
        proxy, "AddDynamoItem", table_name=table, item_data={"id": "a", "v": 2}, overwrite=False
    )
    assert (status, code) == (409, "ConditionalCheckFailedException")
    assert message.startswith(f"PutItem into table {table!r}: ")
    await ok(proxy, "AddDynamoItem", table_name=table, item_data={"id": "b", "v": 3}, overwrite=False)
    await ok(proxy, "AddDynamoItem", table_name=table, item_data={"id": "a", "v": 4})
    items = (await ok(proxy, "ScanDynamoTable", table_name=table))["Items"]
    assert sorted(items, key=lambda i: i["id"]) == [{"id": "a", "v": 4}, {"id": "b", "v": 3}]


async def test_a_key_of_the_wrong_type_is_dynamodbs_validation_error(proxy, moto, aws_env):
    table = moto.create_table(unique("typed-key"), ("id", "N"))
    status, code, _ = await fails(proxy, "AddDynamoItem", table_name=table, item_data={"id": "not a number"})
    assert (status, code) == (400, "ValidationException")


@pytest.mark.parametrize("command", ["AddDynamoItem", "QueryDynamoTable", "ScanDynamoTable"])
async def test_a_missing_table_is_not_found(proxy, aws_env, command):
    table = unique("missing")
    params: dict[str, Any] = {"table_name": table, "item_data": {"id": "a"}, "partition_key": "a"}
    status, payload = await call(proxy, command, **params)
    assert status == 404
    assert payload["error"]["error_code"] == "ResourceNotFoundException"
    assert payload["error"]["message"].endswith("(ResourceNotFoundException)")
    assert payload["spiff__logs"][-1].startswith("-> ResourceNotFoundException (400) after ")


async def test_scan_follows_every_page(proxy, moto, aws_env):
    table = moto.create_table(unique("pages"), ("id", "N"))
    for n in range(7):
        moto.dynamodb.put_item(TableName=table, Item={"id": {"N": str(n)}, "half": {"N": f"{n}.5"}})
    # The server really pages: a page of 2 has a LastEvaluatedKey.
    assert "LastEvaluatedKey" in moto.dynamodb.scan(TableName=table, Limit=2)
    status, payload = await call(proxy, "ScanDynamoTable", table_name=table, page_size=2)
    assert status == 200
    body = payload["command_response"]["body"]
    assert (body["Count"], body["ScannedCount"], "LastEvaluatedKey" in body) == (7, 7, False)
    assert sorted(body["Items"], key=lambda i: i["id"]) == [{"id": n, "half": n + 0.5} for n in range(7)]
    assert payload["spiff__logs"][-1].startswith("-> 7 items (7 scanned) in 4 pages after ")
    # Without page_size the same: one page of at most 1 MB.
    body = await ok(proxy, "ScanDynamoTable", table_name=table)
    assert (body["Count"], body["ScannedCount"]) == (7, 7)


async def test_scan_limit_stops_early_and_exclusive_start_key_resumes(proxy, moto, aws_env):
    table = moto.create_table(unique("resume"), ("id", "N"))
    for n in range(5):
        moto.dynamodb.put_item(TableName=table, Item={"id": {"N": str(n)}})
    status, payload = await call(proxy, "ScanDynamoTable", table_name=table, limit=3, page_size=2)
    assert status == 200
    assert re.fullmatch(
        r"-> 3 items \(3 scanned\) in 2 pages, stopped at the limit after \d+ ms", payload["spiff__logs"][-1]
    )
    first = payload["command_response"]["body"]
    assert (first["Count"], len(first["Items"])) == (3, 3)
    assert first["LastEvaluatedKey"] == first["Items"][-1]
    rest = await ok(proxy, "ScanDynamoTable", table_name=table, exclusive_start_key=first["LastEvaluatedKey"])
    assert rest["Count"] == 2
    assert sorted(i["id"] for i in first["Items"] + rest["Items"]) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"page_size": -1}, "page_size"),
        ({"exclusive_start_key": [1]}, "exclusive_start_key"),
    ],
)
async def test_paging_parameters_are_checked(proxy, aws_env, params, field):
    status, payload = await call(proxy, "ScanDynamoTable", table_name="any-table", **params)
    assert (status, payload["error"]["error_code"]) == (400, "InvalidParameters")
    assert payload["error"]["message"].startswith("Invalid parameters")
    assert f": {field} " in payload["error"]["message"]


@pytest.fixture
def movies(moto) -> str:
    table: str = moto.create_table(unique("movies"), ("year", "N"), ("title", "S"))
    for year, title in [(1982, "E.T."), (1982, "Blade Runner"), (1964, "Dr. Strangelove")]:
        moto.dynamodb.put_item(TableName=table, Item={"year": {"N": str(year)}, "title": {"S": title}})
    return table


async def test_query_with_and_without_sort_key(proxy, movies, per_call):
    # A number, as a diagram's expression gives it, for the number partition key "year".
    body = await ok(proxy, "QueryDynamoTable", table_name=movies, partition_key=1982, **per_call)
    assert body == {
        "Items": [{"year": 1982, "title": "Blade Runner"}, {"year": 1982, "title": "E.T."}],
        "Count": 2,
        "ScannedCount": 2,
    }
    body = await ok(
        proxy, "QueryDynamoTable", table_name=movies, partition_key="1982", sort_key="E.T.", **per_call
    )
    assert body["Items"] == [{"year": 1982, "title": "E.T."}]
    body = await ok(proxy, "QueryDynamoTable", table_name=movies, partition_key="2001", **per_call)
    assert body == {"Items": [], "Count": 0, "ScannedCount": 0}


async def test_query_limit_and_resume(proxy, movies, per_call):
    first = await ok(proxy, "QueryDynamoTable", table_name=movies, partition_key="1982", limit=1, **per_call)
    assert first["Items"] == [{"year": 1982, "title": "Blade Runner"}]
    assert first["LastEvaluatedKey"] == {"year": 1982, "title": "Blade Runner"}
    rest = await ok(
        proxy,
        "QueryDynamoTable",
        table_name=movies,
        partition_key="1982",
        exclusive_start_key=first["LastEvaluatedKey"],
        **per_call,
    )
    assert rest["Items"] == [{"year": 1982, "title": "E.T."}]


async def test_query_keys_must_fit_the_key_schema(proxy, moto, movies, per_call):
    status, code, message = await fails(
        proxy, "QueryDynamoTable", table_name=movies, partition_key="x", **per_call
    )
    assert (status, code) == (400, "InvalidParameters")
    assert "partition_key must be a number: the table's key is a number" in message
    table = moto.create_table(unique("no-sort"), ("id", "S"))
    status, code, message = await fails(
        proxy, "QueryDynamoTable", table_name=table, partition_key="a", sort_key="b", **per_call
    )
    assert (status, code) == (400, "InvalidParameters")
    assert f"sort_key must be empty: table {table!r} has no sort key" in message


async def test_binary_keys_are_base64_text(proxy, moto, per_call):
    table = moto.create_table(unique("binary"), ("blob", "B"))
    for blob in (b"\x01\x02", b"\xff"):
        moto.dynamodb.put_item(TableName=table, Item={"blob": {"B": blob}, "v": {"S": blob.hex()}})
    body = await ok(proxy, "QueryDynamoTable", table_name=table, partition_key="AQI=", **per_call)
    assert body["Items"] == [{"blob": "AQI=", "v": "0102"}]
    first = await ok(proxy, "ScanDynamoTable", table_name=table, limit=1, **per_call)
    rest = await ok(
        proxy, "ScanDynamoTable", table_name=table, exclusive_start_key=first["LastEvaluatedKey"], **per_call
    )
    assert sorted(i["v"] for i in first["Items"] + rest["Items"]) == ["0102", "ff"]
    status, code, message = await fails(
        proxy, "QueryDynamoTable", table_name=table, partition_key="!!", **per_call
    )
    assert (status, code) == (400, "InvalidParameters")
    assert "partition_key must be base64 text: the table's key is binary" in message


async def test_a_read_that_would_outlive_the_deadline_stops(moto, aws_env):
    table = moto.create_table(unique("slow"), ("id", "S"))
    service = AwsService()
    try:
        request = aws_pb2.ScanDynamoTableRequest(table_name=table)
        with pytest.raises(errors.CommandError) as caught:
            await asyncio.to_thread(service.ScanDynamoTable, request, LocalContext(time.monotonic() + 0.5))
        assert (caught.value.code, caught.value.error_code) == (
            grpc.StatusCode.DEADLINE_EXCEEDED,
            "DeadlineExceeded",
        )
        assert "read it in parts with limit and exclusive_start_key" in caught.value.message
    finally:
        await service.aclose()


# --- S3 ---------------------------------------------------------------------------------------


async def test_upload_and_get_file_data_round_trip(proxy, moto, per_call):
    bucket = moto.create_bucket(unique("files"))
    content = bytes(range(256))
    body = await ok(
        proxy,
        "UploadFileData",
        file_data=data_url(content, "image/png", "pixel%20map.png"),
        bucket=bucket,
        object_name="images/pixel map.png",
        **per_call,
    )
    etag = body.pop("etag")
    assert len(etag) == 32
    assert body == {
        "result": "success",
        "bucket": bucket,
        "object_name": "images/pixel map.png",
        "content_type": "image/png",
        "size": 256,
        "version_id": None,
    }
    assert moto.get_object(bucket, "images/pixel map.png") == (content, "image/png")
    body = await ok(proxy, "GetFileData", bucket=bucket, object_name="images/pixel map.png", **per_call)
    modified = datetime.datetime.fromisoformat(body.pop("last_modified"))
    assert abs(modified - datetime.datetime.now(datetime.UTC)) < datetime.timedelta(minutes=5)
    assert body == {
        "file_data": data_url(content, "image/png", "pixel%20map.png"),
        "content_type": "image/png",
        "size": 256,
        "etag": etag,
    }


@pytest.mark.parametrize(
    ("file_data", "content", "content_type"),
    [
        pytest.param(
            "data:,hello%20world", b"hello world", "text/plain;charset=US-ASCII", id="rfc2397-default"
        ),
        pytest.param(
            "data:text/csv;charset=utf-8;name=a.csv;base64,YSxiCg",
            b"a,b\n",
            "text/csv;charset=utf-8",
            id="unpadded",
        ),
        pytest.param("DATA:application/json;base64,e30=", b"{}", "application/json", id="no-name"),
    ],
)
async def test_data_url_forms(proxy, moto, per_call, file_data, content, content_type):
    bucket = moto.create_bucket(unique("forms"))
    body = await ok(proxy, "UploadFileData", file_data=file_data, bucket=bucket, object_name="x", **per_call)
    assert (body["content_type"], body["size"]) == (content_type, len(content))
    assert moto.get_object(bucket, "x") == (content, content_type)


@pytest.mark.parametrize(
    ("file_data", "problem"),
    [
        pytest.param("aGVsbG8=", "must be a data URL", id="plain-base64"),
        pytest.param("data:text/plain;base64", "without the comma", id="no-comma"),
        pytest.param("data:text/plain;base64,@@@=", "not valid base64", id="bad-base64"),
        pytest.param("data:text plain;base64,aGk=", "invalid media type", id="bad-media-type"),
    ],
)
async def test_bad_data_urls_are_invalid_parameters(proxy, per_call, file_data, problem):
    status, code, message = await fails(
        proxy, "UploadFileData", file_data=file_data, bucket="any-bucket", object_name="x", **per_call
    )
    assert (status, code) == (400, "InvalidParameters")
    assert message.startswith("Invalid parameters: file_data ")
    assert problem in message


async def test_missing_buckets_and_keys_are_not_found(proxy, moto, aws_env):
    missing = unique("missing")
    status, code, message = await fails(
        proxy, "UploadFileData", file_data=data_url(b"x"), bucket=missing, object_name="a.bin"
    )
    assert (status, code) == (404, "NoSuchBucket")
    assert message == (
        f"PutObject s3://{missing}/a.bin (1 bytes, application/octet-stream): "
        "The specified bucket does not exist (NoSuchBucket)"
    )
    status, code, _ = await fails(proxy, "GetFileData", bucket=missing, object_name="a.bin")
    assert (status, code) == (404, "NoSuchBucket")
    bucket = moto.create_bucket(unique("empty"))
    status, code, message = await fails(proxy, "GetFileData", bucket=bucket, object_name="a.bin")
    assert (status, code) == (404, "NoSuchKey")
    assert message == f"GetObject s3://{bucket}/a.bin: The specified key does not exist. (NoSuchKey)"


async def test_get_file_data_refuses_objects_over_the_limit(moto, aws_env, monkeypatch):
    bucket = moto.create_bucket(unique("limit"))
    moto.put_object(bucket, "four", b"1234", "text/plain")
    moto.put_object(bucket, "five", b"12345")
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES", "4")
    service = AwsService()
    context = LocalContext(time.monotonic() + 10)
    try:
        answer = await asyncio.to_thread(
            service.GetFileData, aws_pb2.GetFileDataRequest(bucket=bucket, object_name="four"), context
        )
        assert answer.file_data == "data:text/plain;name=four;base64,MTIzNA=="
        with pytest.raises(errors.CommandError) as caught:
            await asyncio.to_thread(
                service.GetFileData, aws_pb2.GetFileDataRequest(bucket=bucket, object_name="five"), context
            )
        assert (caught.value.code, caught.value.error_code) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "ObjectTooLarge",
        )
        assert "has 5 bytes, more than GetFileData returns (4, CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES)" in (
            caught.value.message
        )
    finally:
        await service.aclose()


async def test_presigned_urls_download_and_upload(proxy, moto, aws_env):
    bucket = moto.create_bucket(unique("presigned"))
    moto.put_object(bucket, "report.pdf", b"%PDF-1.7 fake", "application/pdf")
    body = await ok(proxy, "GetPresignedUrl", bucket=bucket, object_name="report.pdf")
    assert (body["method"], body["expires_in"]) == ("GET", 3600)
    expires_at = datetime.datetime.fromisoformat(body["expires_at"])
    assert (
        abs(expires_at - datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)).total_seconds()
        < 60
    )
    assert body["url"].startswith(f"{moto.endpoint}/{bucket}/report.pdf?")
    assert "X-Amz-Signature=" in body["url"]
    async with httpx.AsyncClient() as client:
        download = await client.get(body["url"])
        assert (download.status_code, download.content) == (200, b"%PDF-1.7 fake")
        body = await ok(
            proxy,
            "GetPresignedUrl",
            bucket=bucket,
            object_name="upload.pdf",
            method="put",
            expires_in=60,
            content_type="application/pdf",
        )
        assert (body["method"], body["expires_in"]) == ("PUT", 60)
        upload = await client.put(
            body["url"], content=b"uploaded", headers={"Content-Type": "application/pdf"}
        )
        assert upload.status_code == 200
    assert moto.get_object(bucket, "upload.pdf") == (b"uploaded", "application/pdf")


@pytest.mark.parametrize(
    ("params", "problem"),
    [
        ({"expires_in": 0}, "expires_in must be between 1 and 604800"),
        ({"expires_in": 604801}, "expires_in must be between 1 and 604800"),
        ({"method": "delete"}, "method must be one of get, put"),
    ],
)
async def test_presign_parameters_are_checked(proxy, aws_env, params, problem):
    status, code, message = await fails(
        proxy, "GetPresignedUrl", bucket="any-bucket", object_name="x", **params
    )
    assert (status, code) == (400, "InvalidParameters")
    assert problem in message


# --- configuration and failures ---------------------------------------------------------------


async def test_service_endpoint_and_aws_region_from_the_environment(proxy, moto, monkeypatch, closed_port):
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{closed_port}")  # the specific one wins
    monkeypatch.setenv("AWS_ENDPOINT_URL_DYNAMODB", moto.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    monkeypatch.setenv("AWS_REGION", "eu-west-1")  # only AWS_REGION, as Lambda and ECS set it
    table = unique("region")
    status, payload = await call(proxy, "ScanDynamoTable", table_name=table)
    assert (status, payload["error"]["error_code"]) == (404, "ResourceNotFoundException")
    assert payload["spiff__logs"][0] == f"Scan of table {table!r} at {moto.endpoint} (eu-west-1)"


async def test_a_profile_from_the_config_file(proxy, moto, monkeypatch, tmp_path):
    config = tmp_path / "config"
    config.write_text(
        f"[profile moto-test]\nregion = {REGION}\nendpoint_url = {moto.endpoint}\n"
        "aws_access_key_id = AKIDPROFILE\naws_secret_access_key = profile-secret\n"
    )
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    table = moto.create_table(unique("profile"), ("id", "S"))
    body = await ok(proxy, "ScanDynamoTable", table_name=table, profile="moto-test")
    assert body["Count"] == 0
    status, code, message = await fails(proxy, "ScanDynamoTable", table_name=table, profile="nope")
    assert (status, code) == (400, "ProfileNotFound")
    assert "nope" in message


async def test_per_call_configuration_is_checked(proxy):
    status, payload = await call(
        proxy,
        "ScanDynamoTable",
        table_name="any-table",
        region="US East",
        endpoint_url="ftp://example.com",
        aws_access_key_id="AKID",
        aws_session_token=TOKEN,
    )
    assert (status, payload["error"]["error_code"]) == (400, "InvalidParameters")
    assert payload["error"]["message"] == (
        "Invalid parameters: region must be a region name such as us-east-1; "
        "endpoint_url must be an http:// or https:// URL; "
        "aws_secret_access_key is required with aws_access_key_id."
    )
    status, code, message = await fails(
        proxy,
        "GetFileData",
        bucket="b",
        object_name="x",
        aws_secret_access_key=SECRET,
        aws_session_token=TOKEN,
    )
    assert (status, code) == (400, "InvalidParameters")
    assert "aws_access_key_id is required with aws_secret_access_key" in message
    assert "aws_session_token needs aws_access_key_id and aws_secret_access_key" in message


async def test_values_boto3_refuses(proxy, per_call):
    status, code, message = await fails(proxy, "GetFileData", bucket="no space!", object_name="x", **per_call)
    assert (status, code) == (400, "ParamValidationError")
    assert message.startswith("GetObject s3://no space!/x: Parameter validation failed:")


async def test_no_credentials_and_no_region(proxy, moto, monkeypatch):
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", moto.endpoint)
    status, code, message = await fails(
        proxy, "ScanDynamoTable", table_name="any-table", endpoint_url=moto.endpoint, region=REGION
    )
    assert (status, code) == (400, "NoCredentialsError")
    assert "no AWS credentials" in message
    status, code, message = await fails(
        proxy,
        "ScanDynamoTable",
        table_name="any-table",
        endpoint_url=moto.endpoint,
        aws_access_key_id=KEY_ID,
        aws_secret_access_key=SECRET,
    )
    assert (status, code) == (400, "NoRegionError")
    assert "no AWS region" in message


@pytest.mark.parametrize("command", ["ScanDynamoTable", "GetFileData"])
async def test_an_unreachable_endpoint_is_unavailable(proxy, per_call, closed_port, command, monkeypatch):
    per_call["endpoint_url"] = f"http://127.0.0.1:{closed_port}"
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", per_call["endpoint_url"])
    started = time.monotonic()
    status, payload = await call(
        proxy, command, table_name="any-table", bucket="any-bucket", object_name="x", **per_call
    )
    assert time.monotonic() - started < 5
    assert (status, payload["error"]["error_code"]) == (503, "EndpointConnectionError")
    assert f"127.0.0.1:{closed_port}" in payload["error"]["message"]
    assert payload["spiff__logs"][-1].startswith("-> no connection after ")


async def test_secrets_stay_out_of_logs_messages_and_results(
    proxy, moto, per_call, closed_port, caplog, monkeypatch
):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", f"{moto.endpoint},http://127.0.0.1:{closed_port}")
    per_call["aws_session_token"] = TOKEN
    table = moto.create_table(unique("secret"), ("id", "S"))
    bucket = moto.create_bucket(unique("secret"))
    calls: list[tuple[str, dict[str, Any]]] = [
        ("AddDynamoItem", {"table_name": table, "item_data": {"id": "a"}}),
        ("ScanDynamoTable", {"table_name": table}),
        ("QueryDynamoTable", {"table_name": unique("missing"), "partition_key": "a"}),
        ("UploadFileData", {"file_data": data_url(b"x"), "bucket": bucket, "object_name": "x"}),
        ("GetFileData", {"bucket": bucket, "object_name": "missing"}),
        (
            "GetFileData",
            {"bucket": bucket, "object_name": "x", "endpoint_url": f"http://127.0.0.1:{closed_port}"},
        ),
        ("GetPresignedUrl", {"bucket": bucket, "object_name": "x"}),
    ]
    seen, results = [], []
    for command, params in calls:
        _, payload = await call(proxy, command, **{**per_call, **params})
        seen.extend(payload["spiff__logs"])
        if payload["error"] is not None:
            seen.append(payload["error"]["message"])
        results.append(json_values.dumps(payload))
    assert any("X-Amz-Security-Token" in record.getMessage() for record in caplog.records)  # DEBUG was on
    seen.append(caplog.text)
    text = "\n".join(seen)
    assert "PutItem" in text
    for secret in (SECRET, TOKEN):
        assert secret not in text
    # A presigned URL made with temporary credentials carries their session token: AWS's design.
    assert SECRET not in "\n".join(results)
    assert all(TOKEN not in result for result in results[:-1])


async def test_grpc_callers_get_results_and_rich_errors(grpc_channel, moto, aws_env):
    stub = aws_pb2_grpc.AwsServiceStub(grpc_channel)  # type: ignore[no-untyped-call]
    table = moto.create_table(unique("grpc"), ("id", "S"))
    await stub.AddDynamoItem(
        aws_pb2.AddDynamoItemRequest(table_name=table, item_data=json_values.dump({"id": "a", "n": 1.25})),
        timeout=10,
    )
    scanned = await stub.ScanDynamoTable(aws_pb2.ScanDynamoTableRequest(table_name=table), timeout=10)
    assert json_values.load(scanned.body) == {
        "Items": [{"id": "a", "n": 1.25}],
        "Count": 1,
        "ScannedCount": 1,
    }
    bucket = moto.create_bucket(unique("grpc"))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.GetFileData(aws_pb2.GetFileDataRequest(bucket=bucket, object_name="nope"), timeout=10)
    failure = caught.value
    assert failure.code() == grpc.StatusCode.NOT_FOUND
    details = [value for key, value in failure.trailing_metadata() or () if key == "grpc-status-details-bin"]
    assert isinstance(details[0], bytes)
    infos = []
    for detail in status_pb2.Status.FromString(details[0]).details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            infos.append(error_details_pb2.ErrorInfo())
            detail.Unpack(infos[-1])
    assert [info.reason for info in infos] == ["NoSuchKey"]


async def test_one_client_per_configuration_shared_by_threads(moto, aws_env, per_call):
    table = moto.create_table(unique("shared"), ("id", "S"))
    service = AwsService()
    context = LocalContext(time.monotonic() + 10)
    try:
        from_env = aws_pb2.ScanDynamoTableRequest(table_name=table)
        explicit = aws_pb2.ScanDynamoTableRequest(table_name=table, **per_call)
        answers = await asyncio.gather(
            *(asyncio.to_thread(service.ScanDynamoTable, r, context) for r in [from_env, explicit] * 8)
        )
        assert {json_values.load(a.body)["Count"] for a in answers} == {0}
        clients = list(service._clients._clients.values())
        assert len(clients) == 2
    finally:
        await service.aclose()
    assert service._clients._clients == {}


# --- timeouts within the deadline ----------------------------------------------------------------


@pytest.mark.parametrize("budget", [0.1, 0.4, 1.0, 2.0, 5.0, 9.0, 15.0, 20.0, 39.0, 44.0, 120.0])
@pytest.mark.parametrize("attempts", [1, 3, 5])
def test_timeouts_and_attempts_fit_the_budget(budget, attempts):
    fitted = fit(5.0, 30.0, attempts, budget)
    assert 1 <= fitted.attempts <= attempts
    assert fitted.connect_timeout <= 5.0
    assert fitted.read_timeout <= 30.0
    worst = fitted.attempts * (fitted.connect_timeout + fitted.read_timeout) + backoff_bound(fitted.attempts)
    assert worst <= max(budget, 0.2) + 1e-9


def test_the_usual_deadline_keeps_the_configured_attempts():
    assert fit(5.0, 30.0, 3, None) == Fit(5.0, 30.0, 3)
    usual = fit(5.0, 30.0, 3, coarse_budget(40.0 - 0.05))
    assert (usual.attempts, usual.connect_timeout) == (3, 5.0)
    assert coarse_budget(39.97) == coarse_budget(39.6) == 39.0
    assert coarse_budget(0.9) == 0.4
    assert coarse_budget(0.2) == 0.1


async def test_a_hung_endpoint_fails_within_the_deadline(monkeypatch):
    """A server that accepts connections and never answers: botocore's 60 s defaults and retries
    would hold the worker thread for minutes; the call ends within its deadline."""
    monkeypatch.delenv("AWS_MAX_ATTEMPTS")  # botocore's default of 3 attempts, fitted to the deadline
    with SilentServer() as silent:
        endpoint = f"http://127.0.0.1:{silent.port}"
        monkeypatch.setenv("CONNECTOR_PROXY_AWS_ENDPOINT_URLS", endpoint)
        service = AwsService()
        try:
            request = aws_pb2.ScanDynamoTableRequest(
                table_name="t",
                endpoint_url=endpoint,
                region=REGION,
                aws_access_key_id=KEY_ID,
                aws_secret_access_key=SECRET,
            )
            for deadline in (3.0, 3.2):  # the same whole-second budget: one client
                started = time.monotonic()
                with pytest.raises(errors.CommandError) as caught:
                    await asyncio.to_thread(
                        service.ScanDynamoTable, request, LocalContext(time.monotonic() + deadline)
                    )
                assert time.monotonic() - started < deadline + 0.5
                assert (caught.value.code, caught.value.error_code) == (
                    grpc.StatusCode.DEADLINE_EXCEEDED,
                    "ReadTimeoutError",
                )
            assert len(service._clients._clients) == 1
        finally:
            await service.aclose()

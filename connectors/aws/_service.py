"""The aws servicer: DynamoDB items and S3 objects through boto3's low-level clients.

Configuration: boto3's default chain, overridable per call (see ``_clients``); a per-call
endpoint_url only when ``CONNECTOR_PROXY_AWS_ENDPOINT_URLS`` lists it or it is the configured
AWS_ENDPOINT_URL[_S3|_DYNAMODB] (see ``_endpoints``). Retries are botocore's standard mode, at most
AWS_MAX_ATTEMPTS (default 3) attempts, as many as fit the command's deadline (see ``_budget``).
``CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES`` (default 10 MiB) caps what GetFileData returns.

boto3 blocks, so the commands are plain ``def`` methods, run in worker threads, on clients cached
per (service, configuration) (``_clients``).

DynamoDB goes through the low-level client: values are converted exactly (``_values``); query and
scan follow LastEvaluatedKey through every page, or until ``limit`` items, and stop with
DeadlineExceeded when the command's deadline comes first (``_pages``). A table's key schema
(DescribeTable) is cached for a few minutes and forgotten when a command on it fails.

Errors and secrets: see ``_errors``. A URL presigned with a session token contains it: that is how
AWS presigned URLs work.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import os
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from spiff.connector.aws.v1 import aws_pb2, aws_pb2_grpc

from server import errors, json_values
from server.egress import EgressPolicy

from ._clients import Clients, Target, parse_target
from ._data_urls import header_value, parse_data_url
from ._endpoints import ENV_ENDPOINT_URLS, parse_endpoint_urls
from ._errors import aws_errors, raise_bad
from ._pages import paging, read_pages
from ._values import item_attributes, key_value, typed_key

__all__ = ["AwsService"]

DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024
SCHEMA_TTL = 300.0  # seconds a table's key schema is reused


class AwsService(aws_pb2_grpc.AwsServiceServicer):
    """DynamoDB and S3 commands.

    Args:
        max_object_bytes: the largest object GetFileData returns; by default
            ``CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES``, else 10 MiB.
        connect_timeout: the longest wait for a connection to AWS.
        read_timeout: the longest wait for an answer; both are shortened, and the attempts
            reduced, to fit the command's deadline (see ``_budget``).
        max_clients: how many configurations keep a client.
        egress: the policy every request's host is checked against; by default the proxy's
            egress settings (``server.egress``).

    Raises:
        ValueError: ``CONNECTOR_PROXY_AWS_ENDPOINT_URLS`` lists something that is not an http(s) URL.
    """

    def __init__(
        self,
        *,
        max_object_bytes: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_clients: int = 64,
        egress: EgressPolicy | None = None,
    ) -> None:
        parse_endpoint_urls(os.environ.get(ENV_ENDPOINT_URLS, ""))  # a mistake stops start-up
        if max_object_bytes is None:
            max_object_bytes = int(
                os.environ.get("CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES") or DEFAULT_MAX_OBJECT_BYTES
            )
        if max_object_bytes < 0:
            msg = "CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES must not be negative"
            raise ValueError(msg)
        self._max_object_bytes = max_object_bytes
        common = {
            "connect_timeout": connect_timeout,
            "read_timeout": read_timeout,
            "max_pool_connections": 32,
            "user_agent_extra": "spiff-connector-proxy",
        }
        self._clients = Clients(
            {"dynamodb": common, "s3": {"signature_version": "s3v4", **common}},
            max_clients,
            egress or EgressPolicy.from_env(),
        )
        self._schemas_lock = threading.Lock()
        self._schemas: dict[tuple[Target, str], tuple[float, dict[str, tuple[str, str]]]] = {}

    async def aclose(self) -> None:
        """Closes the cached clients' connection pools."""
        self._clients.close()

    def AddDynamoItem(
        self, request: aws_pb2.AddDynamoItemRequest, context: Any
    ) -> aws_pb2.AddDynamoItemResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        item = item_attributes(request.item_data, bad)
        raise_bad(bad)
        overwrite = request.overwrite if request.HasField("overwrite") else True
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            aws_errors(f"PutItem into table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target, context.time_remaining())
            call.at(client)
            condition: dict[str, Any] = {}
            if not overwrite:
                partition_name = self._key_schema(client, target, table)["HASH"][0]
                condition = {
                    "ConditionExpression": "attribute_not_exists(#pk)",
                    "ExpressionAttributeNames": {"#pk": partition_name},
                }
            client.put_item(TableName=table, Item=item, **condition)
        return aws_pb2.AddDynamoItemResponse()

    def QueryDynamoTable(
        self, request: aws_pb2.QueryDynamoTableRequest, context: Any
    ) -> aws_pb2.QueryDynamoTableResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        limit, page_size, start = paging(request, bad)
        raise_bad(bad)
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            aws_errors(f"Query of table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target, context.time_remaining())
            call.at(client)
            keys = self._key_schema(client, target, table)
            partition_name, partition_type = keys["HASH"]
            names = {"#pk": partition_name}
            values = {":pk": key_value(request.partition_key, partition_type, "partition_key", bad)}
            condition = "#pk = :pk"
            if request.sort_key:
                if "RANGE" not in keys:
                    bad.append(
                        errors.Violation("sort_key", f"must be empty: table {table!r} has no sort key")
                    )
                else:
                    sort_name, sort_type = keys["RANGE"]
                    names["#sk"] = sort_name
                    values[":sk"] = key_value(request.sort_key, sort_type, "sort_key", bad)
                    condition += " AND #sk = :sk"
            params: dict[str, Any] = {
                "TableName": table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            if start is not None:
                params["ExclusiveStartKey"] = typed_key(start, keys, bad)
            raise_bad(bad)
            body = read_pages(client.query, params, limit, page_size, context, call)
        return aws_pb2.QueryDynamoTableResponse(body=json_values.dump(body))

    def ScanDynamoTable(
        self, request: aws_pb2.ScanDynamoTableRequest, context: Any
    ) -> aws_pb2.ScanDynamoTableResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        limit, page_size, start = paging(request, bad)
        raise_bad(bad)
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            aws_errors(f"Scan of table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target, context.time_remaining())
            call.at(client)
            params: dict[str, Any] = {"TableName": table}
            if start is not None:
                params["ExclusiveStartKey"] = typed_key(start, self._key_schema(client, target, table), bad)
                raise_bad(bad)
            body = read_pages(client.scan, params, limit, page_size, context, call)
        return aws_pb2.ScanDynamoTableResponse(body=json_values.dump(body))

    def UploadFileData(
        self, request: aws_pb2.UploadFileDataRequest, context: Any
    ) -> aws_pb2.UploadFileDataResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        content, content_type = parse_data_url(request.file_data, bad)
        raise_bad(bad)
        where = f"s3://{request.bucket}/{request.object_name}"
        with aws_errors(f"PutObject {where} ({len(content)} bytes, {content_type})") as call:
            client = self._clients.get("s3", target, context.time_remaining())
            call.at(client)
            answer = client.put_object(
                Bucket=request.bucket, Key=request.object_name, Body=content, ContentType=content_type
            )
        return aws_pb2.UploadFileDataResponse(
            result="success",
            bucket=request.bucket,
            object_name=request.object_name,
            content_type=content_type,
            size=len(content),
            etag=answer.get("ETag", "").strip('"'),
            version_id=answer.get("VersionId"),
        )

    def GetFileData(self, request: aws_pb2.GetFileDataRequest, context: Any) -> aws_pb2.GetFileDataResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        raise_bad(bad)
        where = f"s3://{request.bucket}/{request.object_name}"
        with aws_errors(f"GetObject {where}") as call:
            client = self._clients.get("s3", target, context.time_remaining())
            call.at(client)
            answer = client.get_object(Bucket=request.bucket, Key=request.object_name)
            stream = answer["Body"]
            try:
                size = answer.get("ContentLength", 0)
                if size > self._max_object_bytes:
                    call.done(f"{size} bytes, over the limit of {self._max_object_bytes}")
                    message_text = (
                        f"{where} has {size} bytes, more than GetFileData returns "
                        f"({self._max_object_bytes}, CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES); "
                        "share it with GetPresignedUrl instead."
                    )
                    raise errors.FailedPrecondition(message_text, error_code="ObjectTooLarge")
                content = stream.read(self._max_object_bytes + 1)
            finally:
                stream.close()
        if len(content) > self._max_object_bytes:  # the object grew, or ContentLength was missing
            message_text = (
                f"{where} has more than {self._max_object_bytes} bytes, more than GetFileData returns."
            )
            raise errors.FailedPrecondition(message_text, error_code="ObjectTooLarge")
        content_type = header_value(answer.get("ContentType")) or "application/octet-stream"
        name = request.object_name.rsplit("/", 1)[-1] or request.object_name
        header = ";".join(part.strip() for part in content_type.split(";"))
        encoded = base64.b64encode(content).decode()
        modified = answer.get("LastModified")
        return aws_pb2.GetFileDataResponse(
            file_data=f"data:{header};name={quote(name, safe='')};base64,{encoded}",
            content_type=content_type,
            size=len(content),
            etag=answer.get("ETag", "").strip('"'),
            last_modified=modified.astimezone(datetime.UTC).isoformat() if modified else "",
        )

    def GetPresignedUrl(
        self, request: aws_pb2.GetPresignedUrlRequest, context: Any
    ) -> aws_pb2.GetPresignedUrlResponse:
        bad: list[errors.Violation] = []
        target = parse_target(request, bad)
        method = request.method if request.HasField("method") else "get"
        if method not in ("get", "put"):
            bad.append(errors.Violation("method", "must be one of get, put"))
        # expires_in's range and content_type's pattern are declared in the proto, checked before.
        expires_in = request.expires_in if request.HasField("expires_in") else 3600
        raise_bad(bad)
        params = {"Bucket": request.bucket, "Key": request.object_name}
        if method == "put" and request.content_type:
            params["ContentType"] = request.content_type
        where = f"s3://{request.bucket}/{request.object_name}"
        with aws_errors(f"Presigning {method.upper()} {where} for {expires_in} s") as call:
            client = self._clients.get("s3", target, context.time_remaining())
            call.at(client)
            url = client.generate_presigned_url(f"{method}_object", Params=params, ExpiresIn=expires_in)
        expires_at = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        return aws_pb2.GetPresignedUrlResponse(
            url=url,
            method=method.upper(),
            expires_in=expires_in,
            expires_at=(expires_at + datetime.timedelta(seconds=expires_in)).isoformat(),
        )

    @contextlib.contextmanager
    def _schema_dropped_on_error(self, target: Target, table: str) -> Iterator[None]:
        """Forgets the table's cached key schema when a command on it fails (it may be stale)."""
        try:
            yield
        except errors.CommandError:
            with self._schemas_lock:
                self._schemas.pop((target, table), None)
            raise

    def _key_schema(self, client: Any, target: Target, table: str) -> dict[str, tuple[str, str]]:
        """``{"HASH": (name, type), "RANGE": (name, type)}`` of a table (DescribeTable, cached)."""
        key = (target, table)
        now = time.monotonic()
        with self._schemas_lock:
            cached = self._schemas.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        description = client.describe_table(TableName=table)["Table"]
        types = {a["AttributeName"]: a["AttributeType"] for a in description["AttributeDefinitions"]}
        schema = {
            k["KeyType"]: (k["AttributeName"], types[k["AttributeName"]]) for k in description["KeySchema"]
        }
        with self._schemas_lock:
            if len(self._schemas) > 1000:
                self._schemas.clear()
            self._schemas[key] = (now + SCHEMA_TTL, schema)
        return schema

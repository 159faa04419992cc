"""The aws connector: DynamoDB items and S3 objects through boto3, one cached client per configuration.

Configuration: boto3's default chain (AWS_DEFAULT_REGION, AWS_ENDPOINT_URL[_S3|_DYNAMODB],
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE, the shared config and
credentials files, SSO, container and instance roles), then AWS_REGION for the region; each call
may override region, endpoint_url, aws_access_key_id + aws_secret_access_key (+ aws_session_token)
and profile. Retries are boto3's (AWS_RETRY_MODE, AWS_MAX_ATTEMPTS; standard mode, 3 attempts).
``CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES`` (default 10 MiB) caps what GetFileData returns.

boto3 blocks, so the commands are plain ``def`` methods, run in worker threads. Clients are
thread-safe and cached per (service, configuration), at most 64, least recently used dropped
first; they are created under a lock because botocore Sessions (which boto3 Sessions wrap) are not
thread-safe. All sessions share one loader, so service models are parsed once per process.

DynamoDB goes through the low-level client. Items are read from the request's JSON with every
number as a Decimal (nested ones too), so 8.1 is stored as 8.1 and not as a float's binary
approximation; results turn numbers back into JSON numbers (integers when integral, text when a
float cannot hold every digit: ``server.json_values``), binary values into base64 text and sets
into sorted lists. Query and scan follow LastEvaluatedKey through every page, or until ``limit``
items, and stop with DeadlineExceeded when the command's deadline comes first, so no scan outlives
its caller in a worker thread.

Errors: an AWS error keeps its code (``ResourceNotFoundException``, ``NoSuchKey``...) with a gRPC
code by name or by HTTP status (``_grpc_class``); botocore's local failures keep their class name
(``NoCredentialsError``, ``NoRegionError``...); connection failures are ``EndpointConnectionError``.

Secrets: per-call secret keys and session tokens never reach spiff__logs or messages, and
``_SecretMask`` masks them in botocore's DEBUG logs (which print request headers, hence
X-Amz-Security-Token). A URL presigned with a session token contains it: that is how AWS
presigned URLs work.
"""

from __future__ import annotations

import base64
import binascii
import collections
import contextlib
import datetime
import decimal
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote, unquote, unquote_to_bytes, urlsplit

from spiff.connector.aws.v1 import aws_pb2, aws_pb2_grpc
from spiff.connector.v1 import types_pb2

from connectors._lazy import lazy_import
from server import errors, json_values, log
from server.invocation import redact

if TYPE_CHECKING:
    from boto3.dynamodb import types as dynamodb_types  # type: ignore[import-untyped]
    from botocore import (  # type: ignore[import-untyped]
        config as botocore_config,
        exceptions as boto_errors,
        loaders as botocore_loaders,
        session as botocore_session,
    )
else:  # imported by the first call (in its worker thread), not by discovery: about 11 MiB and 120 ms
    dynamodb_types = lazy_import("boto3.dynamodb.types")
    botocore_config = lazy_import("botocore.config")
    boto_errors = lazy_import("botocore.exceptions")
    botocore_loaders = lazy_import("botocore.loaders")
    botocore_session = lazy_import("botocore.session")

__all__ = ["AwsService"]

DEFAULT_MAX_OBJECT_BYTES = 10 * 1024 * 1024
MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # SigV4's limit
DEADLINE_MARGIN = 1.0  # seconds left when a multi-page read gives up, so its error arrives in time
SCHEMA_TTL = 300.0  # seconds a table's key schema is reused
_REGION = re.compile(r"[a-z0-9-]{1,64}")
_MEDIA_TYPE = re.compile(r"[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+")
_PRINTABLE = re.compile(r"[\x20-\x7e]*")

# By name where the HTTP status would mislead (DynamoDB answers 400 for most of these).
_CODE_CLASSES: dict[str, type[errors.CommandError]] = {
    **dict.fromkeys(("ResourceNotFoundException", "NoSuchBucket", "NoSuchKey"), errors.NotFound),
    **dict.fromkeys(("AccessDenied", "AccessDeniedException"), errors.PermissionDenied),
    **dict.fromkeys(
        (
            "UnrecognizedClientException",
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "InvalidClientTokenId",
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidToken",
            "MissingAuthenticationToken",
            "MissingAuthenticationTokenException",
        ),
        errors.Unauthenticated,
    ),
    **dict.fromkeys(
        (
            "ThrottlingException",
            "ProvisionedThroughputExceededException",
            "RequestLimitExceeded",
            "SlowDown",
            "LimitExceededException",
            "TooManyRequestsException",
        ),
        errors.ResourceExhausted,
    ),
    "ConditionalCheckFailedException": errors.AlreadyExists,  # only overwrite=false sets a condition
    "ValidationException": errors.InvalidArgument,
    "TransactionConflictException": errors.Aborted,
    "ResourceInUseException": errors.FailedPrecondition,
}
_STATUS_CLASSES: dict[int, type[errors.CommandError]] = {
    400: errors.InvalidArgument,
    401: errors.Unauthenticated,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Aborted,
    412: errors.FailedPrecondition,
    429: errors.ResourceExhausted,
}


class _Context(Protocol):
    def time_remaining(self) -> float | None: ...


class _ConfiguredRequest(Protocol):
    region: str
    endpoint_url: str
    aws_access_key_id: str
    aws_secret_access_key: str
    aws_session_token: str
    profile: str


class _PagedRequest(Protocol):
    limit: int
    page_size: int
    exclusive_start_key: types_pb2.JsonValue

    def HasField(self, field_name: str) -> bool: ...


@dataclass(frozen=True)
class _Target:
    """Where and as whom a call goes: the per-call overrides (empty = the standard chain)."""

    region: str
    endpoint_url: str
    profile: str
    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(repr=False)


class _SecretMask(logging.Filter):
    """Masks per-call secrets in botocore's DEBUG records (request headers, canonical requests).

    A filter only sees its own logger's records, hence one instance on each logger that
    prints request contents. The filter runs only for records that pass the level check.
    """

    LOGGERS = ("botocore.endpoint", "botocore.auth", "botocore.hooks", "botocore.parsers")

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: collections.Counter[str] = collections.Counter()

    def install(self) -> None:
        for name in self.LOGGERS:
            target = logging.getLogger(name)
            if self not in target.filters:
                target.addFilter(self)

    def add(self, values: tuple[str, ...]) -> None:
        with self._lock:
            self._secrets.update(v for v in values if v)

    def discard(self, values: tuple[str, ...]) -> None:
        with self._lock:
            self._secrets.subtract(v for v in values if v)
            self._secrets = +self._secrets  # drops the ones no client uses any more

    def filter(self, record: logging.LogRecord) -> bool:
        with self._lock:
            secrets = tuple(self._secrets)
        if secrets:
            text = record.getMessage()
            masked = redact(text, secrets)
            if masked != text:
                record.msg, record.args = masked, None
        return True


_MASK = _SecretMask()
_MASK.install()


@functools.cache
def _loader() -> Any:
    """One loader for every session: a new profile (or servicer) does not parse the service models again."""
    return botocore_loaders.create_loader()


class _Clients:
    """boto3 clients by (service, target), created under a lock, least recently used dropped first.

    A dropped client is not closed: another thread may be using it; its pool goes with it.
    """

    def __init__(self, configs: dict[str, dict[str, Any]], limit: int) -> None:
        self._configs = configs  # botocore Config arguments by service
        self._limit = limit
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._clients: collections.OrderedDict[tuple[str, _Target], Any] = collections.OrderedDict()

    def get(self, service: str, target: _Target) -> Any:
        key = (service, target)
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return client
            # A session is kept only once it made a client: unknown profiles are not collected.
            session = self._sessions.get(target.profile)
            if session is None:
                session = botocore_session.Session(profile=target.profile or None)
                session.register_component("data_loader", _loader())
            client = session.create_client(
                service,
                region_name=target.region
                or session.get_config_variable("region")
                or os.environ.get("AWS_REGION")
                or None,
                endpoint_url=target.endpoint_url or None,
                aws_access_key_id=target.access_key_id or None,
                aws_secret_access_key=target.secret_access_key or None,
                aws_session_token=target.session_token or None,
                config=botocore_config.Config(**self._configs[service]),
            )
            self._sessions[target.profile] = session
            _MASK.add((target.secret_access_key, target.session_token))
            self._clients[key] = client
            if len(self._clients) > self._limit:
                (_, dropped), _ = self._clients.popitem(last=False)
                _MASK.discard((dropped.secret_access_key, dropped.session_token))
            return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, collections.OrderedDict()
            self._sessions.clear()
        for (_, target), client in clients.items():
            _MASK.discard((target.secret_access_key, target.session_token))
            client.close()


class AwsService(aws_pb2_grpc.AwsServiceServicer):
    """DynamoDB and S3 commands.

    Args:
        max_object_bytes: the largest object GetFileData returns; by default
            ``CONNECTOR_PROXY_AWS_MAX_OBJECT_BYTES``, else 10 MiB.
        connect_timeout: seconds to wait for a connection to AWS.
        read_timeout: seconds to wait for an answer, below spiff-arena's 45 s budget.
        max_clients: how many configurations keep a client.
    """

    def __init__(
        self,
        *,
        max_object_bytes: int | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_clients: int = 64,
    ) -> None:
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
        self._clients = _Clients(
            {"dynamodb": common, "s3": {"signature_version": "s3v4", **common}}, max_clients
        )
        self._schemas_lock = threading.Lock()
        self._schemas: dict[tuple[_Target, str], tuple[float, dict[str, tuple[str, str]]]] = {}

    async def aclose(self) -> None:
        """Closes the cached clients' connection pools."""
        self._clients.close()

    def AddDynamoItem(
        self, request: aws_pb2.AddDynamoItemRequest, context: Any
    ) -> aws_pb2.AddDynamoItemResponse:
        bad: list[errors.Violation] = []
        target = _target(request, bad)
        item = _item(request.item_data, bad)
        _raise_bad(bad)
        overwrite = request.overwrite if request.HasField("overwrite") else True
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            _aws_errors(f"PutItem into table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target)
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
        target = _target(request, bad)
        limit, page_size, start = _paging(request, bad)
        _raise_bad(bad)
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            _aws_errors(f"Query of table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target)
            call.at(client)
            keys = self._key_schema(client, target, table)
            partition_name, partition_type = keys["HASH"]
            names = {"#pk": partition_name}
            values = {":pk": _key_value(request.partition_key, partition_type, "partition_key", bad)}
            condition = "#pk = :pk"
            if request.sort_key:
                if "RANGE" not in keys:
                    bad.append(
                        errors.Violation("sort_key", f"must be empty: table {table!r} has no sort key")
                    )
                else:
                    sort_name, sort_type = keys["RANGE"]
                    names["#sk"] = sort_name
                    values[":sk"] = _key_value(request.sort_key, sort_type, "sort_key", bad)
                    condition += " AND #sk = :sk"
            params: dict[str, Any] = {
                "TableName": table,
                "KeyConditionExpression": condition,
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            if start is not None:
                params["ExclusiveStartKey"] = _typed_key(start, keys, bad)
            _raise_bad(bad)
            body = _read_pages(client.query, params, limit, page_size, context, call)
        return aws_pb2.QueryDynamoTableResponse(body=json_values.dump(body))

    def ScanDynamoTable(
        self, request: aws_pb2.ScanDynamoTableRequest, context: Any
    ) -> aws_pb2.ScanDynamoTableResponse:
        bad: list[errors.Violation] = []
        target = _target(request, bad)
        limit, page_size, start = _paging(request, bad)
        _raise_bad(bad)
        table = request.table_name
        with (
            self._schema_dropped_on_error(target, table),
            _aws_errors(f"Scan of table {table!r}") as call,
        ):
            client = self._clients.get("dynamodb", target)
            call.at(client)
            params: dict[str, Any] = {"TableName": table}
            if start is not None:
                params["ExclusiveStartKey"] = _typed_key(start, self._key_schema(client, target, table), bad)
                _raise_bad(bad)
            body = _read_pages(client.scan, params, limit, page_size, context, call)
        return aws_pb2.ScanDynamoTableResponse(body=json_values.dump(body))

    def UploadFileData(
        self, request: aws_pb2.UploadFileDataRequest, context: Any
    ) -> aws_pb2.UploadFileDataResponse:
        bad: list[errors.Violation] = []
        target = _target(request, bad)
        content, content_type = _data_url(request.file_data, bad)
        _raise_bad(bad)
        where = f"s3://{request.bucket}/{request.object_name}"
        with _aws_errors(f"PutObject {where} ({len(content)} bytes, {content_type})") as call:
            client = self._clients.get("s3", target)
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
        target = _target(request, bad)
        _raise_bad(bad)
        where = f"s3://{request.bucket}/{request.object_name}"
        with _aws_errors(f"GetObject {where}") as call:
            client = self._clients.get("s3", target)
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
        content_type = _header_value(answer.get("ContentType")) or "application/octet-stream"
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
        target = _target(request, bad)
        method = request.method if request.HasField("method") else "get"
        if method not in ("get", "put"):
            bad.append(errors.Violation("method", "must be one of get, put"))
        expires_in = request.expires_in if request.HasField("expires_in") else 3600
        if not 1 <= expires_in <= MAX_PRESIGN_SECONDS:
            bad.append(errors.Violation("expires_in", f"must be between 1 and {MAX_PRESIGN_SECONDS} seconds"))
        if request.content_type and not _PRINTABLE.fullmatch(request.content_type):
            bad.append(errors.Violation("content_type", "must be printable ASCII"))
        _raise_bad(bad)
        params = {"Bucket": request.bucket, "Key": request.object_name}
        if method == "put" and request.content_type:
            params["ContentType"] = request.content_type
        where = f"s3://{request.bucket}/{request.object_name}"
        with _aws_errors(f"Presigning {method.upper()} {where} for {expires_in} s") as call:
            client = self._clients.get("s3", target)
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
    def _schema_dropped_on_error(self, target: _Target, table: str) -> Iterator[None]:
        """Forgets the table's cached key schema when a command on it fails (it may be stale)."""
        try:
            yield
        except errors.CommandError:
            with self._schemas_lock:
                self._schemas.pop((target, table), None)
            raise

    def _key_schema(self, client: Any, target: _Target, table: str) -> dict[str, tuple[str, str]]:
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


def _raise_bad(bad: list[errors.Violation]) -> None:
    if bad:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)


def _target(request: _ConfiguredRequest, bad: list[errors.Violation]) -> _Target:
    if request.region and not _REGION.fullmatch(request.region):
        bad.append(errors.Violation("region", "must be a region name such as us-east-1"))
    if request.endpoint_url:
        parts = urlsplit(request.endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            bad.append(errors.Violation("endpoint_url", "must be an http:// or https:// URL"))
    if bool(request.aws_access_key_id) != bool(request.aws_secret_access_key):
        given, missing = (
            ("aws_access_key_id", "aws_secret_access_key")
            if request.aws_access_key_id
            else ("aws_secret_access_key", "aws_access_key_id")
        )
        bad.append(errors.Violation(missing, f"is required with {given}"))
    if request.aws_session_token and not request.aws_access_key_id:
        bad.append(errors.Violation("aws_session_token", "needs aws_access_key_id and aws_secret_access_key"))
    return _Target(
        region=request.region,
        endpoint_url=request.endpoint_url,
        profile=request.profile,
        access_key_id=request.aws_access_key_id,
        secret_access_key=request.aws_secret_access_key,
        session_token=request.aws_session_token,
    )


class _Call:
    """One AWS call's spiff__logs lines: what and where, then the outcome and its duration."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.outcome = "done"
        self._started = time.perf_counter()

    def at(self, client: Any) -> None:
        log(f"{self.what} at {client.meta.endpoint_url} ({client.meta.region_name or 'no region'})")

    def done(self, outcome: str) -> None:
        log(f"-> {outcome} after {round((time.perf_counter() - self._started) * 1000)} ms")


@contextlib.contextmanager
def _aws_errors(what: str) -> Iterator[_Call]:
    """Logs the call and turns boto3's exceptions into documented CommandErrors."""
    call = _Call(what)
    done = call.done
    try:
        yield call
    except errors.CommandError:
        raise
    except boto_errors.ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "UnknownError")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        done(f"{code} ({status})")
        detail = error.get("Message") or f"HTTP {status}"
        message_text = f"{what}: {detail} ({code})"
        raise _grpc_class(code, status)(message_text, error_code=code) from exc
    except boto_errors.NoCredentialsError as exc:
        done("no credentials")
        message_text = (
            f"{what}: no AWS credentials. Give aws_access_key_id and aws_secret_access_key, or "
            "configure the proxy's (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, a role)."
        )
        raise errors.FailedPrecondition(message_text, error_code="NoCredentialsError") from exc
    except boto_errors.NoRegionError as exc:
        done("no region")
        message_text = f"{what}: no AWS region. Give region, or set AWS_DEFAULT_REGION for the proxy."
        raise errors.FailedPrecondition(message_text, error_code="NoRegionError") from exc
    except boto_errors.ParamValidationError as exc:
        done("refused by boto3")
        message_text = f"{what}: {exc}"
        raise errors.InvalidArgument(message_text, error_code="ParamValidationError") from exc
    except boto_errors.ReadTimeoutError as exc:
        done("no answer")
        message_text = f"{what}: {exc}"
        raise errors.DeadlineExceeded(message_text, error_code="ReadTimeoutError") from exc
    except boto_errors.ConnectionError as exc:  # refused, connect timeout, DNS, TLS, proxy
        done("no connection")
        message_text = f"{what}: {exc}"
        raise errors.Unavailable(message_text, error_code="EndpointConnectionError") from exc
    except (boto_errors.HTTPClientError, boto_errors.IncompleteReadError) as exc:
        done("connection broken")
        message_text = f"{what}: {exc}"
        raise errors.Unavailable(message_text, error_code="ConnectionError") from exc
    except boto_errors.BotoCoreError as exc:
        name = type(exc).__name__
        done(name)
        message_text = f"{what}: {exc}"
        raise errors.FailedPrecondition(message_text, error_code=name) from exc
    else:
        done(call.outcome)


def _grpc_class(code: str, status: int) -> type[errors.CommandError]:
    known = _CODE_CLASSES.get(code) or _STATUS_CLASSES.get(status)
    if known is not None:
        return known
    return errors.Unavailable if status >= 500 else errors.FailedPrecondition


# --- DynamoDB values --------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


_DECIMAL_JSON = json.JSONDecoder(parse_float=decimal.Decimal, parse_constant=_reject_constant)


def _exact_json(value: types_pb2.JsonValue, name: str, bad: list[errors.Violation]) -> Any:
    """The parameter's JSON with every non-integer number a Decimal (exact, as DynamoDB wants)."""
    try:
        return _DECIMAL_JSON.decode(value.json) if value.json else None
    except (ValueError, RecursionError):
        bad.append(errors.Violation(name, "is not valid JSON"))
        return None


def _typed(value: Any, name: str, bad: list[errors.Violation]) -> Any:
    """DynamoDB's typed form ({"N": "8.1"}, {"M": {...}}) of a JSON value."""
    try:
        return dynamodb_types.TypeSerializer().serialize(value)
    except decimal.DecimalException:
        bad.append(
            errors.Violation(
                name, "has a number DynamoDB cannot store exactly (38 significant digits, 1e-130 to 1e126)"
            )
        )
    except (TypeError, ValueError) as exc:
        bad.append(errors.Violation(name, f"cannot be stored in DynamoDB: {exc}"))
    return None


def _item(value: types_pb2.JsonValue, bad: list[errors.Violation]) -> dict[str, Any]:
    known = len(bad)
    item = _exact_json(value, "item_data", bad)
    if not isinstance(item, dict):
        if len(bad) == known:
            bad.append(errors.Violation("item_data", "must be a JSON object"))
        return {}
    typed = _typed(item, "item_data", bad)
    return typed["M"] if typed else {}


def _plain(value: dict[str, Any]) -> Any:
    """The JSON form of one DynamoDB typed value (see the module docstring)."""
    ((kind, data),) = value.items()
    if kind in ("S", "BOOL"):
        return data
    if kind == "N":
        return json_values.to_json_safe(decimal.Decimal(data))
    if kind == "NULL":
        return None
    if kind == "M":
        return {key: _plain(item) for key, item in data.items()}
    if kind == "L":
        return [_plain(item) for item in data]
    if kind == "B":
        return base64.b64encode(data).decode()
    if kind == "SS":
        return sorted(data)
    if kind == "NS":
        return [json_values.to_json_safe(n) for n in sorted(decimal.Decimal(x) for x in data)]
    if kind == "BS":
        return [base64.b64encode(b).decode() for b in sorted(data)]
    msg = f"unknown DynamoDB type {kind}"
    raise ValueError(msg)


def _key_value(text: str, kind: str, name: str, bad: list[errors.Violation]) -> dict[str, Any]:
    """A key parameter (text) as the key attribute's type: S, N or B (base64)."""
    if kind == "N":
        try:
            number = decimal.Decimal(text.strip())
        except decimal.InvalidOperation:
            number = decimal.Decimal("NaN")
        if not number.is_finite():
            bad.append(errors.Violation(name, "must be a number: the table's key is a number"))
        return {"N": text.strip()}
    if kind == "B":
        try:
            return {"B": base64.b64decode(text, validate=True)}
        except binascii.Error:
            bad.append(errors.Violation(name, "must be base64 text: the table's key is binary"))
            return {"B": b""}
    return {"S": text}


def _typed_key(key: Any, schema: dict[str, tuple[str, str]], bad: list[errors.Violation]) -> dict[str, Any]:
    """An exclusive_start_key (a LastEvaluatedKey as returned) in DynamoDB's typed form."""
    if not isinstance(key, dict) or not key:
        bad.append(errors.Violation("exclusive_start_key", "must be a LastEvaluatedKey object"))
        return {}
    types = dict(schema.values())
    typed = {}
    for name, value in key.items():
        kind = types.get(name)
        if (
            kind is not None
            and isinstance(value, str | int | decimal.Decimal)
            and not isinstance(value, bool)
        ):
            typed[name] = _key_value(str(value), kind, f"exclusive_start_key.{name}", bad)
        else:
            typed[name] = _typed(value, f"exclusive_start_key.{name}", bad)
    return typed


def _paging(
    request: _PagedRequest, bad: list[errors.Violation]
) -> tuple[int | None, int | None, dict[str, Any] | None]:
    limit = request.limit if request.HasField("limit") else None
    if limit is not None and limit < 1:
        bad.append(errors.Violation("limit", "must be at least 1"))
    page_size = request.page_size if request.HasField("page_size") else None
    if page_size is not None and page_size < 1:
        bad.append(errors.Violation("page_size", "must be at least 1"))
    start = _exact_json(request.exclusive_start_key, "exclusive_start_key", bad)
    if start is not None and not (isinstance(start, dict) and start):
        bad.append(errors.Violation("exclusive_start_key", "must be a LastEvaluatedKey object"))
        start = None
    return limit, page_size, start


def _read_pages(
    read: Callable[..., dict[str, Any]],
    params: dict[str, Any],
    limit: int | None,
    page_size: int | None,
    context: _Context,
    call: _Call,
) -> dict[str, Any]:
    """Follows LastEvaluatedKey until the last page or ``limit`` items; the incumbent's result shape."""
    items: list[dict[str, Any]] = []
    scanned = pages = 0
    last = params.pop("ExclusiveStartKey", None)
    while True:
        remaining = context.time_remaining()
        if remaining is not None and remaining < DEADLINE_MARGIN:
            call.done(
                f"stopped after {_count(pages, 'page')} ({_count(len(items), 'item')}): the deadline is near"
            )
            message_text = (
                f"{call.what} did not finish before the command's deadline ({_count(pages, 'page')} and "
                f"{_count(len(items), 'item')} read); read it in parts with limit and exclusive_start_key."
            )
            raise errors.DeadlineExceeded(message_text, error_code="DeadlineExceeded")
        page_params = dict(params)
        wanted = page_size
        if limit is not None:
            wanted = min(wanted or limit, limit - len(items))
        if wanted is not None:
            page_params["Limit"] = wanted
        if last is not None:
            page_params["ExclusiveStartKey"] = last
        page = read(**page_params)
        pages += 1
        items.extend(page.get("Items", ()))
        scanned += page.get("ScannedCount", 0)
        last = page.get("LastEvaluatedKey")
        if last is None or (limit is not None and len(items) >= limit):
            break
    more = "" if last is None else ", stopped at the limit"
    call.outcome = f"{_count(len(items), 'item')} ({scanned} scanned) in {_count(pages, 'page')}{more}"
    body: dict[str, Any] = {
        "Items": [_plain({"M": item}) for item in items],
        "Count": len(items),
        "ScannedCount": scanned,
    }
    if last is not None:
        body["LastEvaluatedKey"] = _plain({"M": last})
    return body


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


# --- S3 values --------------------------------------------------------------------------------


def _data_url(text: str, bad: list[errors.Violation]) -> tuple[bytes, str]:
    """The content and Content-Type of ``data:<media type>[;name=<n>][;base64],<data>``."""
    if text[:5].lower() != "data:":
        bad.append(errors.Violation("file_data", "must be a data URL: data:<media type>;base64,<content>"))
        return b"", ""
    header, comma, payload = text[5:].partition(",")
    if not comma:
        bad.append(errors.Violation("file_data", "is a data URL without the comma before its content"))
        return b"", ""
    parts = [part.strip() for part in header.split(";")]
    is_base64 = parts[-1].lower() == "base64"
    if is_base64:
        parts.pop()
    media_type, params = parts[0], [p for p in parts[1:] if p and p.split("=")[0].strip().lower() != "name"]
    if media_type and not _MEDIA_TYPE.fullmatch(media_type):
        bad.append(errors.Violation("file_data", f"has an invalid media type {media_type[:60]!r}"))
        return b"", ""
    if not all(_PRINTABLE.fullmatch(p) and "=" in p for p in params):
        bad.append(errors.Violation("file_data", "has an invalid media type parameter"))
        return b"", ""
    if not media_type:
        media_type, params = "text/plain", params or ["charset=US-ASCII"]
    content_type = ";".join([media_type, *params])
    if not is_base64:
        return unquote_to_bytes(payload), content_type
    compact = unquote("".join(payload.split()))
    try:
        return base64.b64decode(compact + "=" * (-len(compact) % 4), validate=True), content_type
    except binascii.Error:
        bad.append(errors.Violation("file_data", "has content that is not valid base64"))
        return b"", ""


def _header_value(value: Any) -> str:
    return value if isinstance(value, str) and _PRINTABLE.fullmatch(value) else ""

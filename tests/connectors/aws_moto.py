"""A moto server on 127.0.0.1 for the aws connector's tests, and boto3 admin clients to prepare it.

moto in server mode is a real HTTP endpoint speaking the DynamoDB and S3 protocols, so the
connector runs its real boto3 code path: signing, retries, error parsing. Its state lives as long
as the server; tests use fresh table and bucket names (``unique``) instead of resetting it.

The server is moto's ThreadedMotoServer (the same werkzeug server and moto app) with one change:
its sockets set TCP_NODELAY, without which werkzeug's separate header and body writes wait for
the client's delayed ACK and every call takes about 10 ms longer.
"""

from __future__ import annotations

import threading
import uuid
from types import TracebackType
from typing import Any

import boto3  # type: ignore[import-untyped]
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import make_server

REGION = "us-east-1"
ADMIN_KEY_ID = "AKIDADMIN"
ADMIN_SECRET = "admin-secret-key"


def unique(prefix: str) -> str:
    """A fresh resource name, valid as a table and a bucket name."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


class _NoDelayHandler(MotoRequestHandler):
    disable_nagle_algorithm = True


class MotoServer:
    """``with MotoServer() as moto:`` runs the server; ``moto.dynamodb`` and ``moto.s3`` prepare it."""

    def __init__(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=_NoDelayHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"
        self.dynamodb: Any = None
        self.s3: Any = None

    def __enter__(self) -> MotoServer:
        self._thread.start()
        session = boto3.Session(
            aws_access_key_id=ADMIN_KEY_ID, aws_secret_access_key=ADMIN_SECRET, region_name=REGION
        )
        self.dynamodb = session.client("dynamodb", endpoint_url=self.endpoint)
        self.s3 = session.client("s3", endpoint_url=self.endpoint)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        for client in (self.dynamodb, self.s3):
            if client is not None:
                client.close()
        self._server.shutdown()
        self._thread.join()
        self._server.server_close()

    def create_table(self, name: str, partition: tuple[str, str], sort: tuple[str, str] | None = None) -> str:
        """A table keyed by ``(attribute name, S|N|B)`` pairs, ready to use."""
        keys = [{"AttributeName": partition[0], "KeyType": "HASH"}]
        attributes = [{"AttributeName": partition[0], "AttributeType": partition[1]}]
        if sort is not None:
            keys.append({"AttributeName": sort[0], "KeyType": "RANGE"})
            attributes.append({"AttributeName": sort[0], "AttributeType": sort[1]})
        self.dynamodb.create_table(
            TableName=name, KeySchema=keys, AttributeDefinitions=attributes, BillingMode="PAY_PER_REQUEST"
        )
        return name

    def create_bucket(self, name: str) -> str:
        self.s3.create_bucket(Bucket=name)
        return name

    def put_object(self, bucket: str, key: str, body: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.s3.put_object(Bucket=bucket, Key=key, Body=body, **extra)

    def get_object(self, bucket: str, key: str) -> tuple[bytes, str]:
        answer = self.s3.get_object(Bucket=bucket, Key=key)
        try:
            return answer["Body"].read(), answer["ContentType"]
        finally:
            answer["Body"].close()

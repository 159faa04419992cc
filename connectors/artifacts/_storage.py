"""Where a document goes: an S3 bucket and key prefix, reached with the aws connector's clients.

``storage`` (or CONNECTOR_PROXY_ARTIFACTS_STORAGE) is a bucket name (``my-bucket``), a bucket and
prefix (``s3://my-bucket/artifacts/``), or ``inline`` (no storage: a data URL). The S3 client is the
aws connector's (``connectors.aws._clients``): boto3's standard configuration chain, one cached
client per coarse time budget whose timeouts and attempts fit the call's deadline, and the
egress policy checked before each request. S3 errors become the aws connector's error codes.
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass
from typing import Any

from connectors.aws._clients import Clients, Target
from connectors.aws._errors import aws_errors
from server.egress import EgressPolicy

__all__ = ["INLINE", "Location", "S3Store", "Stored", "parse_location"]

INLINE = "inline"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[^\x00-\x1f\x7f]*")
_STANDARD_CHAIN = Target(
    region="", endpoint_url="", profile="", access_key_id="", secret_access_key="", session_token=""
)


@dataclass(frozen=True)
class Location:
    """A bucket and the prefix keys get in it ("" or ending with "/")."""

    bucket: str
    prefix: str

    def key(self, name: str) -> str:
        return self.prefix + name


@dataclass(frozen=True)
class Stored:
    """Where a document was stored, and the presigned link to it when one was asked for."""

    private_link: str
    presigned_link: str | None = None
    expires_at: str | None = None


def parse_location(text: str) -> Location | None:
    """The location ``text`` names; None for ``inline`` or nothing.

    Raises:
        ValueError: ``text`` is neither a bucket name nor an ``s3://bucket/prefix`` URL.
    """
    text = text.strip()
    if not text or text.lower() == INLINE:
        return None
    if text[:5].lower() == "s3://":
        bucket, _, prefix = text[5:].partition("/")
    elif "/" in text or ":" in text:
        msg = 'must be a bucket name, "s3://<bucket>/<prefix>" or "inline"'
        raise ValueError(msg)
    else:
        bucket, prefix = text, ""
    if not _BUCKET.fullmatch(bucket):
        msg = "must name an S3 bucket: 3 to 63 lowercase letters, digits, dots and hyphens"
        raise ValueError(msg)
    prefix = prefix.lstrip("/")
    if not _PREFIX.fullmatch(prefix) or len(prefix) > 512:
        msg = "has a key prefix with control characters or longer than 512 characters"
        raise ValueError(msg)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return Location(bucket, prefix)


class S3Store:
    """Uploads PDFs and presigns links to them, with the aws connector's S3 clients."""

    def __init__(self, egress: EgressPolicy, max_clients: int = 8) -> None:
        common = {
            "connect_timeout": 5.0,
            "read_timeout": 30.0,
            "max_pool_connections": 16,
            "user_agent_extra": "spiff-connector-proxy",
            "signature_version": "s3v4",
        }
        self._clients = Clients({"s3": common}, max_clients, egress)

    def close(self) -> None:
        self._clients.close()

    def put(
        self,
        location: Location,
        key: str,
        pdf: bytes,
        file_name: str,
        *,
        presign_for: int | None,
        context: Any,
    ) -> Stored:
        """Uploads ``pdf`` to ``location`` under ``key``; presigns a GET link for ``presign_for``
        seconds when given (runs in a worker thread: boto3 blocks).

        Raises:
            server.errors.CommandError: S3's refusal or failure, as the aws connector names them.
        """
        where = f"s3://{location.bucket}/{key}"
        with aws_errors(f"PutObject {where} ({len(pdf)} bytes)") as call:
            client = self._clients.get("s3", _STANDARD_CHAIN, context.time_remaining())
            call.at(client)
            client.put_object(
                Bucket=location.bucket,
                Key=key,
                Body=pdf,
                ContentType="application/pdf",
                ContentDisposition=f'inline; filename="{file_name}"',
            )
        if presign_for is None:
            return Stored(where)
        with aws_errors(f"Presigning GET {where} for {presign_for} s"):
            url = client.generate_presigned_url(
                "get_object", Params={"Bucket": location.bucket, "Key": key}, ExpiresIn=presign_for
            )
        now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
        expires_at = (now + datetime.timedelta(seconds=presign_for)).isoformat()
        return Stored(where, url, expires_at)

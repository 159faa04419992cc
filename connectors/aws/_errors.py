"""AWS failures as command errors, the spiff__logs lines of each call, and secrets masked in botocore's logs.

An AWS error keeps its code (``ResourceNotFoundException``, ``NoSuchKey``...) with a gRPC code by
name or by HTTP status (``grpc_class``); botocore's local failures keep their class name
(``NoCredentialsError``, ``NoRegionError``...); connection failures are ``EndpointConnectionError``.

Per-call secret keys and session tokens never reach spiff__logs or messages, and ``SECRET_MASK``
masks them in botocore's DEBUG logs (which print request headers, hence X-Amz-Security-Token).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from connectors._lazy import lazy_import
from server import errors, log
from server.invocation import redact

if TYPE_CHECKING:
    from botocore import exceptions as boto_errors  # type: ignore[import-untyped]
else:  # imported by the first call (in its worker thread), not by discovery: about 11 MiB and 120 ms
    boto_errors = lazy_import("botocore.exceptions")

__all__ = ["SECRET_MASK", "Call", "aws_errors", "grpc_class", "raise_bad"]

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


SECRET_MASK = _SecretMask()
SECRET_MASK.install()


def raise_bad(bad: list[errors.Violation]) -> None:
    if bad:
        problems = "; ".join(f"{v.field} {v.description}" for v in bad)
        message_text = f"Invalid parameters: {problems}."
        raise errors.InvalidParameters(message_text, violations=bad)


class Call:
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
def aws_errors(what: str) -> Iterator[Call]:
    """Logs the call and turns boto3's exceptions into documented CommandErrors."""
    call = Call(what)
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
        raise grpc_class(code, status)(message_text, error_code=code) from exc
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


def grpc_class(code: str, status: int) -> type[errors.CommandError]:
    known = _CODE_CLASSES.get(code) or _STATUS_CLASSES.get(status)
    if known is not None:
        return known
    return errors.Unavailable if status >= 500 else errors.FailedPrecondition

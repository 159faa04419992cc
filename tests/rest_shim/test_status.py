"""gRPC status → HTTP status, and command failures → spiff's error envelope, on both paths."""

from __future__ import annotations

import logging

import grpc
import pytest
from spiff.connector.example.v1 import example_pb2

from rest_shim._status import HTTP_STATUS
from server import errors
from tests.protos_util import SECRET_TEXT

pytestmark = pytest.mark.anyio

FAIL = "/v1/do/rich/Fail"

# google/rpc/code.proto, "HTTP Mapping" of each code, written out independently of the code under test.
CODE_PROTO_MAPPING = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}

ERROR_CLASSES = sorted(
    (cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.CommandError)),
    key=lambda cls: cls.__name__,
)


@pytest.mark.parametrize("code", list(grpc.StatusCode), ids=lambda c: c.name)
def test_status_table_row(code):
    assert HTTP_STATUS[code] == CODE_PROTO_MAPPING[code.name]


def test_status_table_has_exactly_one_row_per_code():
    assert set(HTTP_STATUS) == set(grpc.StatusCode)


# Subclasses that name a stable error_code of their own for a code another class already has.
SPECIALISED = (errors.InvalidParameters, errors.ConnectorBusy, errors.ProxyBusy, errors.EgressDenied)


def test_every_failing_code_has_exactly_one_error_class():
    leaves = [cls for cls in ERROR_CLASSES if cls is not errors.CommandError and cls not in SPECIALISED]
    assert sorted(cls.code.name for cls in leaves) == sorted(
        c.name for c in grpc.StatusCode if c != grpc.StatusCode.OK
    )


@pytest.mark.parametrize(
    "code", [c for c in grpc.StatusCode if c != grpc.StatusCode.OK], ids=lambda c: c.name
)
def test_for_code_gives_the_class_of_that_code(code):
    cls = errors.for_code(code)
    assert cls.code == code
    assert cls("x").to_failure().code == code


def test_for_code_refuses_ok():
    with pytest.raises(ValueError, match="OK"):
        errors.for_code(grpc.StatusCode.OK)


@pytest.mark.parametrize(
    ("code", "error_code"),
    [
        (grpc.StatusCode.DEADLINE_EXCEEDED, "DeadlineExceeded"),
        (grpc.StatusCode.NOT_FOUND, "NotFound"),
        (grpc.StatusCode.OK, "Ok"),
        (grpc.StatusCode.INTERNAL, "Internal"),
    ],
)
def test_default_error_code_is_the_camel_case_code(code, error_code):
    assert errors.default_error_code(code) == error_code


def test_failure_round_trips_through_a_google_rpc_status():
    failure = errors.InvalidParameters(
        "bad",
        violations=[errors.Violation("a.b[1]", "must be an integer"), errors.Violation("c", "is required")],
        result=example_pb2.ExampleResponse(message="partial"),
    ).to_failure()
    status = failure.to_status()
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    rebuilt = errors.Failure.from_status(
        grpc.StatusCode.INVALID_ARGUMENT, status.message, status, example_pb2.ExampleResponse, ("line",)
    )
    assert rebuilt == errors.Failure(
        grpc.StatusCode.INVALID_ARGUMENT,
        "InvalidParameters",
        "bad",
        failure.violations,
        example_pb2.ExampleResponse(message="partial"),
        ("line",),
    )


def test_failure_from_a_bare_status_uses_the_default_error_code():
    failure = errors.Failure.from_status(
        grpc.StatusCode.UNAVAILABLE, "gone", None, example_pb2.ExampleResponse
    )
    assert (failure.error_code, failure.message, failure.violations, failure.result) == (
        "Unavailable",
        "gone",
        (),
        None,
    )


@pytest.mark.parametrize("error_class", ERROR_CLASSES, ids=lambda cls: cls.__name__)
async def test_each_error_class_gives_its_envelope(rich_proxy, error_class):
    kind = error_class.__name__
    response = await rich_proxy.post(FAIL, json={"kind": kind})
    status = CODE_PROTO_MAPPING[error_class.code.name]
    assert response.status_code == status
    assert response.json() == {
        "command_response": {
            "body": None,
            "mimetype": "application/json",
            "http_status": status,
            "headers": {},
        },
        "command_response_version": 2,
        "error": {"error_code": error_class("x").error_code, "message": f"failed with {kind}"},
        "spiff__logs": [f"about to fail with {kind}"],
    }


def test_error_codes_of_the_classes():
    assert errors.InvalidParameters("x").error_code == "InvalidParameters"
    assert errors.InvalidArgument("x").error_code == "InvalidArgument"
    assert errors.CommandError("x").error_code == "Internal"
    assert errors.NotFound("x", error_code="HttpError404").error_code == "HttpError404"


async def test_unexpected_exception_is_a_500_that_leaks_nothing(rich_proxy, caplog):
    response = await rich_proxy.post(FAIL, json={"kind": "RuntimeError"})
    assert response.status_code == 500
    payload = response.json()
    assert payload["error"]["error_code"] == "Internal"
    assert payload["command_response"]["http_status"] == 500
    assert payload["spiff__logs"] == ["about to fail with RuntimeError"]
    for leak in (SECRET_TEXT, "RuntimeError(", "Traceback", "protos_util"):
        assert leak not in response.text
    assert SECRET_TEXT in caplog.text, "the proxy's own log keeps the details"


async def test_direct_context_abort_is_a_failure_like_any_other(rich_proxy, caplog):
    response = await rich_proxy.post(FAIL, json={"kind": "abort"})
    assert response.status_code == 404
    assert response.json() == {
        "command_response": {"body": None, "mimetype": "application/json", "http_status": 404, "headers": {}},
        "command_response_version": 2,
        "error": {"error_code": "NotFound", "message": "x"},
        "spiff__logs": ["about to fail with abort"],
    }
    assert "raised" not in caplog.text
    assert "Abort already called" not in caplog.text


async def test_failure_with_a_partial_result_renders_it(rich_proxy):
    response = await rich_proxy.post(FAIL, json={"kind": "result"})
    assert response.status_code == 404
    payload = response.json()
    assert payload["command_response"] == {
        "body": {"detail": "the upstream body"},
        "mimetype": "application/json",
        "http_status": 404,
        "headers": {},
    }
    assert payload["error"] == {"error_code": "NotFound", "message": "upstream said 404"}


async def test_large_partial_result_survives_the_remote_path(rich_proxy):
    """The result travels in grpc-status-details-bin (trailing metadata) on the remote path."""
    detail = "<html>" + "x" * 200_000 + "</html>"
    response = await rich_proxy.post(FAIL, json={"kind": "result", "detail": detail})
    assert response.status_code == 404, response.text[:300]
    assert response.json()["command_response"]["body"] == {"detail": detail}


async def test_custom_error_code_is_kept(rich_proxy):
    response = await rich_proxy.post(FAIL, json={"kind": "custom_code"})
    assert response.status_code == 503
    assert response.json()["error"] == {"error_code": "UpstreamDown", "message": "try later"}


async def test_invalid_parameters_from_the_server_side_check(rich_proxy):
    """``kind`` is required; the shim checks it first, so the message is the shim's on both paths."""
    response = await rich_proxy.post(FAIL, json={"kind": ""})
    assert response.status_code == 400
    payload = response.json()
    assert payload["error"]["error_code"] == "InvalidParameters"
    assert "kind" in payload["error"]["message"]
    assert payload["spiff__logs"] == []


@pytest.mark.parametrize("kind", ["RuntimeError", "PermissionDenied"])
async def test_secret_parameters_are_masked_in_logs_messages_and_tracebacks(rich_proxy, caplog, kind):
    caplog.set_level(logging.DEBUG)
    token = "tok-8d1f2c"
    response = await rich_proxy.post(FAIL, json={"kind": kind, "token": token})
    assert response.status_code in (403, 500)
    assert token not in response.text
    assert token not in caplog.text
    assert "calling with token ***" in response.json()["spiff__logs"]
    if kind == "PermissionDenied":
        assert response.json()["error"]["message"] == "token *** was refused"
    else:
        assert "refused token ***" in caplog.text, "the traceback is logged, masked"

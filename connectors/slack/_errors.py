"""What Slack's final answer means: the result, or the documented command error (``SLACK_ERRORS``
maps Slack's error strings to gRPC codes), and the error of a 429 that is not waited out."""

from __future__ import annotations

import math
from typing import Any

import grpc
from spiff.connector.slack.v1 import slack_pb2

from server import errors, json_values, log

from ._exchange import Answer
from ._message import API_METHOD, Outgoing

__all__ = ["SLACK_ERRORS", "rate_limited", "result"]

_STATUS: dict[grpc.StatusCode, int] = {  # google/rpc/code.proto's mapping, for the codes used here
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}


def _codes(cls: type[errors.CommandError], *names: str) -> dict[str, type[errors.CommandError]]:
    return dict.fromkeys(names, cls)


# Slack's error strings (chat.postMessage's and the Web API's common ones) by what they mean for a
# retry: the caller's token, rights or target are wrong (4xx, spiff does not retry), Slack is busy
# or broken (429/503, spiff may retry). Anything else is INVALID_ARGUMENT.
SLACK_ERRORS: dict[str, type[errors.CommandError]] = {
    **_codes(
        errors.Unauthenticated,
        "not_authed",
        "invalid_auth",
        "account_inactive",
        "token_revoked",
        "token_expired",
    ),
    **_codes(
        errors.PermissionDenied,
        "access_denied",
        "ekm_access_denied",
        "enterprise_is_restricted",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "not_in_channel",
        "org_login_required",
        "restricted_action",
        "restricted_action_non_threadable_channel",
        "restricted_action_read_only_channel",
        "restricted_action_thread_locked",
        "restricted_action_thread_only_channel",
        "team_access_not_granted",
        "two_factor_setup_required",
        "is_archived",
        "messages_tab_disabled",
    ),
    **_codes(
        errors.NotFound,
        "channel_not_found",
        "duplicate_channel_not_found",
        "duplicate_message_not_found",
        "message_not_found",
        "thread_not_found",
        "user_not_found",
    ),
    **_codes(errors.ResourceExhausted, "rate_limited", "ratelimited", "message_limit_exceeded"),
    **_codes(errors.Unavailable, "internal_error", "fatal_error", "service_unavailable", "request_timeout"),
}


def result(answer: Answer, outgoing: Outgoing) -> slack_pb2.PostMessageResponse:
    """The result of a final answer other than 429, or the error it is."""
    reply = answer.reply
    if reply is None:
        response = slack_pb2.PostMessageResponse(
            body=json_values.dump({"raw_response": answer.text}), http_status=answer.status
        )
        message_text = f"{outgoing.target} answered HTTP {answer.status}, which is not a Slack reply"
        if answer.status >= 500:
            raise errors.Unavailable(message_text, error_code="SlackUnavailable", result=response)
        message_text += "; is the API URL right?"
        raise errors.FailedPrecondition(message_text, error_code="SlackUnexpectedResponse", result=response)
    _log_warnings(reply)
    body = json_values.dump(reply)
    if reply["ok"] and answer.status < 300:
        return slack_pb2.PostMessageResponse(body=body, http_status=answer.status)
    slack_error = reply.get("error")
    slack_error = slack_error if isinstance(slack_error, str) and slack_error else f"HTTP {answer.status}"
    if answer.status >= 500:
        error_class: type[errors.CommandError] = errors.Unavailable
    else:
        error_class = SLACK_ERRORS.get(slack_error, errors.InvalidArgument)
    metadata = reply.get("response_metadata")
    details = metadata.get("messages") if isinstance(metadata, dict) else None
    details = [item for item in details if isinstance(item, str)] if isinstance(details, list) else []
    message_text = ". ".join(details) or slack_error  # the incumbent's message
    http_status = answer.status if answer.status >= 400 else _STATUS[error_class.code]
    response = slack_pb2.PostMessageResponse(body=body, http_status=http_status)
    raise error_class(message_text, error_code="SlackMessageFailed", result=response)


def rate_limited(answer: Answer, wait: float | None, attempts: int) -> errors.CommandError:
    body = answer.reply if answer.reply is not None else {"raw_response": answer.text}
    headers = {"retry-after": answer.retry_after} if answer.retry_after is not None else {}
    response = slack_pb2.PostMessageResponse(
        body=json_values.dump(body), http_status=answer.status, headers=headers
    )
    after = f"retry after {math.ceil(wait)} s" if wait is not None else "no Retry-After given"
    again = " (also after one retry)" if attempts > 1 else ""
    message_text = f"Slack rate limited {API_METHOD}{again}: {after}."
    return errors.ResourceExhausted(message_text, error_code="SlackRateLimited", result=response)


def _log_warnings(reply: dict[str, Any]) -> None:
    """Slack's warnings (``warning`` and ``response_metadata.warnings``), e.g. missing_charset."""
    found: list[str] = []
    if isinstance(reply.get("warning"), str):
        found.extend(reply["warning"].split(","))
    metadata = reply.get("response_metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("warnings"), list):
        found.extend(item for item in metadata["warnings"] if isinstance(item, str))
    unique = list(dict.fromkeys(item.strip() for item in found if item.strip()))
    if unique:
        log(f"Slack warns: {', '.join(unique)}")

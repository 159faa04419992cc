"""A command's reply as spiff's v2 envelope: the one rendering both ``/v1/do`` and job callbacks use."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from rest_shim._catalog import CommandSpec
from rest_shim._status import HTTP_STATUS, envelope, error_envelope
from server import json_values
from server.invocation import Reply
from server.oauth import TokenRefresh

__all__ = ["render_reply"]

logger = logging.getLogger(__name__)


def render_reply(
    spec: CommandSpec, reply: Reply, logs: Sequence[str], *, hand_back_tokens: bool = False
) -> tuple[int, bytes]:
    """The HTTP status and JSON body for ``reply``: 200 and the result, or the failure's status,
    ``error`` and partial result. ``command_response.body`` is always present (null when the
    failure has no result), as spiff-arena's callback route requires.

    With ``hand_back_tokens`` (``/v1/do``'s answer; a job's callback has no such keys), a token set
    the server refreshed comes along for spiff-arena to store."""
    failure = reply.failure
    try:
        if failure is None:
            command_response = spec.layout.command_response(reply.response, 200)
            payload = envelope(command_response, None, logs)
            if hand_back_tokens and reply.refreshed is not None:
                _hand_back(spec, payload, reply.refreshed)
            return 200, json_values.dumps(payload).encode()
        status = HTTP_STATUS.get(failure.code, 500)
        command_response = spec.layout.command_response(failure.result, status)
        error = {"error_code": failure.error_code, "message": failure.message}
        return status, json_values.dumps(envelope(command_response, error, logs)).encode()
    except ValueError:
        # The command produced something that is not JSON (e.g. a malformed JsonValue).
        logger.exception("command %s returned a result that is not JSON", spec.id)
        message = f"{spec.id} returned a result that cannot be sent as JSON."
        return 500, json_values.dumps(error_envelope(500, "InvalidResult", message, logs)).encode()


def _hand_back(spec: CommandSpec, payload: dict[str, Any], refreshed: TokenRefresh) -> None:
    """Adds a refreshed token set the way spiff-arena's backend stores it (spec §3.2 step 7): it
    saves ``refreshed_token_set`` as the secret ``auth`` and takes ``api_response`` as the task's
    result, here exactly what the v2 envelope alone gives (``command_response`` plus
    ``operator_identifier``). It reads those keys only from a body without ``spiff__logs`` (step 3
    would replace the body by ``api_response``), so the log lines go to the proxy's log instead."""
    for line in payload.pop("spiff__logs"):
        logger.info("%s: %s", spec.id, line)
    payload["api_response"] = {**payload["command_response"], "operator_identifier": spec.id}
    payload["refreshed_token_set"] = dict(refreshed.token_set)
    payload["auth"] = refreshed.auth

"""A command's reply as spiff's v2 envelope: the one rendering both ``/v1/do`` and job callbacks use."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from rest_shim._catalog import CommandSpec
from rest_shim._status import HTTP_STATUS, envelope, error_envelope
from server import json_values
from server.invocation import Reply

__all__ = ["render_reply"]

logger = logging.getLogger(__name__)


def render_reply(spec: CommandSpec, reply: Reply, logs: Sequence[str]) -> tuple[int, bytes]:
    """The HTTP status and JSON body for ``reply``: 200 and the result, or the failure's status,
    ``error`` and partial result. ``command_response.body`` is always present (null when the
    failure has no result), as spiff-arena's callback route requires."""
    failure = reply.failure
    try:
        if failure is None:
            command_response = spec.layout.command_response(reply.response, 200)
            return 200, json_values.dumps(envelope(command_response, None, logs)).encode()
        status = HTTP_STATUS.get(failure.code, 500)
        command_response = spec.layout.command_response(failure.result, status)
        error = {"error_code": failure.error_code, "message": failure.message}
        return status, json_values.dumps(envelope(command_response, error, logs)).encode()
    except ValueError:
        # The command produced something that is not JSON (e.g. a malformed JsonValue).
        logger.exception("command %s returned a result that is not JSON", spec.id)
        message = f"{spec.id} returned a result that cannot be sent as JSON."
        return 500, json_values.dumps(error_envelope(500, "InvalidResult", message, logs)).encode()

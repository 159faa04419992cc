"""What every gRPC end of the proxy agrees on: metadata keys and channel/server options."""

from __future__ import annotations

__all__ = ["API_KEY_METADATA", "LOG_METADATA_KEY", "STATUS_DETAILS_KEY", "TOKEN_REFRESH_KEY", "grpc_options"]

# One trailing-metadata entry per spiff__logs line, UTF-8.
LOG_METADATA_KEY = "spiff-log-bin"
# A token set the server refreshed during the call, JSON: {"auth": "<connector>/<name>", "token_set": {...}}.
TOKEN_REFRESH_KEY = "spiff-token-refresh-bin"  # noqa: S105 - a metadata key, not a secret
# The google.rpc.Status of a failure (ErrorInfo, BadRequest, partial result), as grpc-status does.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
# The API key on the gRPC port: the REST header's name, lower-case.
API_KEY_METADATA = "spiff-connector-proxy-api-key"


def grpc_options(max_message_bytes: int) -> list[tuple[str, int | str]]:
    """Channel and server options shared by both ends: message sizes that fit large task data.

    A command's log lines and a failure's details (with its partial result, e.g. an upstream
    error page) travel in trailing metadata, which gRPC otherwise caps at 8-16 KiB: past that
    the call would fail with RESOURCE_EXHAUSTED instead of delivering its answer.
    """
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_metadata_size", max_message_bytes),
        ("grpc.absolute_max_metadata_size", max_message_bytes),
    ]

"""Who may call the gRPC port: the API key as metadata, and TLS with optional client certificates."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc

from server.wire import API_KEY_METADATA

__all__ = ["OPEN_SERVICES", "ApiKeyInterceptor", "read_pem", "server_credentials"]

# Callers that cannot hold a key (load balancers, orchestrators' probes) must see health.
OPEN_SERVICES = ("/grpc.health.v1.Health/",)

_REFUSAL = f"this server needs its API key in the {API_KEY_METADATA} metadata"


def _refusing(handler: grpc.RpcMethodHandler[Any, Any]) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED before reading."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, _REFUSAL)

    shapes = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make: Any = shapes[(handler.request_streaming, handler.response_streaming)]
    refusal: grpc.RpcMethodHandler[Any, Any] = make(
        refuse,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
    return refusal


_UNKNOWN: grpc.RpcMethodHandler[Any, Any] = grpc.unary_unary_rpc_method_handler(lambda request, context: None)


class ApiKeyInterceptor(grpc.aio.ServerInterceptor):
    """Every call but health needs ``spiff-connector-proxy-api-key`` (compared in constant time);
    others are answered UNAUTHENTICATED. Reflection is closed too: the schema is for callers."""

    def __init__(self, api_key: str) -> None:
        if not api_key:
            msg = "an empty API key would leave the server open"
            raise ValueError(msg)
        self._key = api_key.encode()

    def authorized(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> bool:
        for key, value in metadata or ():
            if key == API_KEY_METADATA:
                given = value if isinstance(value, bytes) else value.encode()
                return hmac.compare_digest(given, self._key)
        return False

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler_call_details.method.startswith(OPEN_SERVICES) or self.authorized(
            handler_call_details.invocation_metadata
        ):
            return handler
        # Unknown methods too: a caller without the key learns nothing of what exists.
        return _refusing(handler or _UNKNOWN)


def read_pem(path: str, what: str) -> bytes:
    """A certificate or key file's bytes; a ``ValueError`` naming ``what`` when unreadable."""
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        msg = f"cannot read the {what} {path}: {exc.strerror}"
        raise ValueError(msg) from None


def server_credentials(
    cert_file: str, key_file: str, client_ca_file: str | None = None
) -> grpc.ServerCredentials:
    """TLS for the gRPC port; with ``client_ca_file``, callers must present a certificate it signed.

    Raises:
        ValueError: a file cannot be read.
    """
    return grpc.ssl_server_credentials(
        [(read_pem(key_file, "TLS key file"), read_pem(cert_file, "TLS certificate file"))],
        root_certificates=read_pem(client_ca_file, "client CA file") if client_ca_file else None,
        require_client_auth=client_ca_file is not None,
    )

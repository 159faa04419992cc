"""An OpenAPI 3.1 description of the proxy, generated from the same descriptors as /v1/commands."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_shim._catalog import CommandSpec
from rest_shim._schema_json import BOOL_TEXT, field_schema
from server.schema import SPIFF_CONTEXT, command_options, field_options, is_message

__all__ = ["openapi_document"]

_ENVELOPE: dict[str, Any] = {
    "type": "object",
    # spiff__logs is left out only when a token set was refreshed: see refreshed_token_set.
    "required": ["command_response", "command_response_version", "error"],
    "properties": {
        "command_response": {
            "type": "object",
            "required": ["body", "mimetype", "http_status", "headers"],
            "properties": {
                "body": {},
                "mimetype": {"type": "string"},
                "http_status": {"type": "integer"},
                "headers": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "command_response_version": {"const": 2},
        "error": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": ["error_code", "message"],
                    "properties": {"error_code": {"type": "string"}, "message": {"type": "string"}},
                },
            ]
        },
        "spiff__logs": {"type": "array", "items": {"type": "string"}},
        "refreshed_token_set": {
            "type": "object",
            "description": (
                "Only when the server refreshed an expired OAuth 2.0 token set for the call: "
                "spiff-arena stores it as the secret named by auth and takes api_response as the "
                "result. Such an answer has no spiff__logs, which would make spiff-arena skip these keys."
            ),
        },
        "auth": {"type": "string", "description": "With refreshed_token_set: the secret to store it as."},
        "api_response": {
            "type": "object",
            "description": "With refreshed_token_set: command_response and operator_identifier.",
        },
    },
}

# spiff-arena's keys: a value of another type than described is ignored, not refused.
_SPIFF_KEYS: dict[str, Any] = {
    "spiff__process_instance_id": {"description": "An integer; any other value is ignored."},
    "spiff__process_model_identifier": {"description": "Text; any other value is ignored."},
    "spiff__task_id": {"description": "Text; any other value is ignored."},
    "spiff__task_data": {
        "description": "The task's data, any JSON (only commands that declare a SpiffContext see it)."
    },
    "spiff__callback_url": {
        "description": "Where an asynchronous result is PUT: text, a URL; any other value is ignored."
    },
    "proxy__async": {
        "type": ["boolean", "string", "null"],
        "pattern": f"^(?:{BOOL_TEXT})$",
        "description": 'true: answer 202 and PUT the result to spiff__callback_url (also "true", any case).',
    },
}
_PREFER = {
    "name": "Prefer",
    "in": "header",
    "required": False,
    "description": "respond-async (RFC 7240): answer 202 and PUT the result to spiff__callback_url.",
    "schema": {"type": "string"},
}


def _request_schema(spec: CommandSpec) -> dict[str, Any]:
    fields = [f for f in spec.method.input_type.fields if not is_message(f, SPIFF_CONTEXT)]
    properties = {f.name: field_schema(f) for f in fields}
    properties.update(_SPIFF_KEYS)
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        # Parameters a diagram still carries after a command dropped them are ignored.
        "additionalProperties": True,
    }
    required = [f.name for f in fields if field_options(f).required]
    if required:
        schema["required"] = required
    return schema


def _operation(spec: CommandSpec) -> dict[str, Any]:
    envelope = {"application/json": {"schema": {"$ref": "#/components/schemas/Envelope"}}}
    return {
        "post": {
            "operationId": spec.id.replace("/", "_"),
            "summary": command_options(spec.method).description or spec.id,
            "tags": [spec.connector],
            "parameters": [_PREFER],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _request_schema(spec)}},
            },
            "responses": {
                "200": {"description": "The command ran.", "content": envelope},
                "202": {
                    "description": (
                        "Accepted as a job (a long-running command, Prefer: respond-async or "
                        "proxy__async): body {job_id, status}; the result is PUT to spiff__callback_url."
                    ),
                    "content": envelope,
                },
                "400": {"description": "InvalidJson or InvalidParameters.", "content": envelope},
                "401": {"description": "Missing or wrong API key."},
                "413": {"description": "PayloadTooLarge.", "content": envelope},
                "default": {"description": "The command failed; see error.error_code.", "content": envelope},
            },
        }
    }


def openapi_document(specs: Iterable[CommandSpec], *, title: str = "spiff connector proxy") -> dict[str, Any]:
    """One POST path per command, each with the JSON Schema of its parameters."""
    paths = {f"/v1/do/{spec.id}": _operation(spec) for spec in specs}
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Envelope": _ENVELOPE},
            "securitySchemes": {
                "apiKey": {"type": "apiKey", "in": "header", "name": "Spiff-Connector-Proxy-Api-Key"}
            },
        },
    }

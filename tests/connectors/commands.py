"""Calling one connector's commands through the shim, for its tests: the envelope's fixed parts
checked on every call, the body of a call that must succeed, the payload of one that must fail."""

from __future__ import annotations

from typing import Any

import httpx


class Commands:
    """``Commands("mysql").ok(client, "DoSQL", ...)`` posts to ``/v1/do/mysql/DoSQL``."""

    def __init__(self, connector: str) -> None:
        self.connector = connector

    async def call(
        self, client: httpx.AsyncClient, command: str, **params: Any
    ) -> tuple[int, dict[str, Any]]:
        """Calls ``<connector>/<command>`` through the shim; checks the envelope's fixed parts."""
        response = await client.post(f"/v1/do/{self.connector}/{command}", json=params)
        payload: dict[str, Any] = response.json()
        assert payload["command_response_version"] == 2
        assert isinstance(payload["spiff__logs"], list)
        assert all(isinstance(line, str) for line in payload["spiff__logs"])
        return response.status_code, payload

    async def ok(self, client: httpx.AsyncClient, command: str, **params: Any) -> Any:
        """The body of a call that must succeed."""
        status, payload = await self.call(client, command, **params)
        assert (status, payload["error"]) == (200, None), payload
        return payload["command_response"]["body"]

    async def fails(
        self, client: httpx.AsyncClient, command: str, status: int, code: str, **params: Any
    ) -> dict[str, Any]:
        """The payload of a call that must fail with this HTTP status and error_code."""
        got, payload = await self.call(client, command, **params)
        assert (got, payload["error"]["error_code"]) == (status, code), payload
        return payload

"""The ai connector: chat completions from any OpenAI-compatible server, over one aiohttp pool."""

from __future__ import annotations

from ._service import AiService as AiService

__all__ = ["AiService"]

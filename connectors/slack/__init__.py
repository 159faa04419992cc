"""The slack connector: posts messages with Slack's Web API chat.postMessage, over one aiohttp pool."""

from __future__ import annotations

from ._service import SlackService as SlackService

__all__ = ["SlackService"]

"""The http connector: GET, HEAD, POST, PUT, PATCH and DELETE to any http(s) URL, over one aiohttp pool."""

from __future__ import annotations

from ._service import HttpService as HttpService

__all__ = ["HttpService"]

"""The artifacts connector: PDF documents from HTML templates, stored in S3 or returned as data URLs."""

from __future__ import annotations

from ._service import ArtifactsService as ArtifactsService

__all__ = ["ArtifactsService"]

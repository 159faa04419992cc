"""The typeahead index: entries sorted by folded name, packed into UTF-8 buffers, searched by prefix.

Matching folds case (``str.casefold``), accents (NFKD without combining marks, plus a few
letters NFKD keeps: ø, ł, đ, æ, œ...), dashes to spaces, typographic apostrophes to ``'``,
and runs of whitespace; the prefix's leading whitespace is ignored, its trailing space is
kept ("new " finds "New York", not "Newark"). Results are sorted by the folded name.
Each index is a sorted list of folded names searched with ``bisect`` (no scan per query),
packed into UTF-8 buffers: the 34k cities take about 3.5 MB.
"""

from __future__ import annotations

import bisect
import itertools
import re
import unicodedata
from array import array
from collections.abc import Iterable
from typing import Any

from server import json_values

__all__ = ["MAX_LIMIT", "Index", "fold"]

MAX_LIMIT = 1000

_SPACES = re.compile(r"\s+")
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


class Index:
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

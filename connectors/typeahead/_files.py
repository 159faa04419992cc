"""Configured typeahead categories: JSON and CSV files named by ``CONNECTOR_PROXY_TYPEAHEAD_FILES``.

``CONNECTOR_PROXY_TYPEAHEAD_FILES=fruits=/d/fruits.json,people:full_name=/d/ppl.csv``
(``category[:search key]=path``, comma-separated; the search key defaults to ``name``). A
``.json`` file holds an array of objects (or of strings, which become ``{"name": s}``); a
``.csv`` file has a header row and each row becomes an object of strings. Files are loaded
when the connector is created: a missing or malformed file stops start-up with a message
naming it. A configured category may replace a bundled one.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server import json_values

from ._index import Index

__all__ = ["FILES_ENV", "CategoryFile", "load_file", "parse_files"]

FILES_ENV = "CONNECTOR_PROXY_TYPEAHEAD_FILES"

_CATEGORY_NAME = re.compile(r"[A-Za-z0-9_.-]+")


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


def load_file(file: CategoryFile) -> Index:
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
    return Index(items, key=file.key)

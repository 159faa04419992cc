"""Lossless JSON: integers of any size, strictness, and the documented forms of non-JSON values."""

from __future__ import annotations

import datetime
import decimal
import uuid

import pytest

from server import json_values


def test_integers_of_any_size_round_trip_exactly():
    value = {"small": 1, "big": 2**53 + 1, "huge": 12345678901234567890123456789}
    assert json_values.loads(json_values.dumps(value)) == value
    assert isinstance(json_values.loads("1"), int)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", "-Infinity", "1e400", "{", "[1,]"])
def test_non_json_text_is_refused(text):
    with pytest.raises(ValueError):  # noqa: PT011 - every refusal is a ValueError, whatever the text
        json_values.loads(text)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(decimal.Decimal("3"), 3, id="integral-decimal"),
        pytest.param(decimal.Decimal("12.50"), 12.5, id="exact-decimal"),
        pytest.param(
            decimal.Decimal("0.1000000000000000000001"), "0.1000000000000000000001", id="precise-decimal"
        ),
        pytest.param(decimal.Decimal("NaN"), "NaN", id="nan-decimal"),
        pytest.param(
            datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
            "2026-01-02T03:04:05+00:00",
            id="datetime",
        ),
        pytest.param(datetime.datetime(2026, 1, 2, 3, 4, 5), "2026-01-02T03:04:05", id="naive-datetime"),
        pytest.param(datetime.date(2026, 1, 2), "2026-01-02", id="date"),
        pytest.param(datetime.time(3, 4, 5), "03:04:05", id="time"),
        pytest.param(datetime.timedelta(minutes=1, seconds=30), 90.0, id="timedelta"),
        pytest.param(uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001", id="uuid"),
        pytest.param(b"\x00hi", "AGhp", id="bytes"),
        pytest.param(memoryview(b"hi"), "aGk=", id="memoryview"),
    ],
)
def test_non_json_values_take_their_documented_form(value, expected):
    text = json_values.dumps({"v": value})
    assert json_values.loads(text) == {"v": expected}
    assert type(json_values.loads(text)["v"]) is type(expected)


def test_unknown_types_and_nan_are_refused():
    with pytest.raises(ValueError, match="not JSON"):
        json_values.dumps(object())
    with pytest.raises(ValueError, match="JSON"):
        json_values.dumps(float("nan"))

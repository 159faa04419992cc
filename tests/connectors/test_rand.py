"""The rand connector through the shim, on both execution paths (in-process and over gRPC)."""

from __future__ import annotations

import collections

import pytest

from tests.connectors.commands import Commands

pytestmark = pytest.mark.anyio

COMMANDS = Commands("rand")


async def test_numbers_stay_in_the_range_both_ends_included(proxy):
    seen: collections.Counter[int] = collections.Counter()
    for _ in range(300):
        body = await COMMANDS.ok(proxy, "Number", min=1, max=3)
        assert set(body) == {"number"}
        assert isinstance(body["number"], int)
        seen[body["number"]] += 1
    # Uniform over {1, 2, 3}: each about 100 times; below 50 has odds far under one in a million.
    assert set(seen) == {1, 2, 3}
    assert min(seen.values()) > 50


async def test_min_defaults_to_zero_and_text_numbers_are_taken(proxy):
    assert await COMMANDS.ok(proxy, "Number", max=0) == {"number": 0}
    assert 0 <= (await COMMANDS.ok(proxy, "Number", max="5"))["number"] <= 5


async def test_one_number_ranges_and_64_bit_ends(proxy):
    assert await COMMANDS.ok(proxy, "Number", min=-7, max=-7) == {"number": -7}
    big = 2**63 - 1
    assert await COMMANDS.ok(proxy, "Number", min=big, max=big) == {"number": big}
    number = (await COMMANDS.ok(proxy, "Number", min=-(2**63), max=big))["number"]
    assert -(2**63) <= number <= big


async def test_an_empty_range_is_invalid_parameters(proxy):
    payload = await COMMANDS.fails(proxy, "Number", 400, "InvalidParameters", min=5, max=4)
    assert "min must not be greater than max (4)" in payload["error"]["message"]


async def test_max_is_required(proxy):
    payload = await COMMANDS.fails(proxy, "Number", 400, "InvalidParameters", min=1)
    assert "max" in payload["error"]["message"]

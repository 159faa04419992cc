"""Fixtures shared by the connector tests."""

from __future__ import annotations

import pytest

from tests.ports import free_port


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening: connecting to it is refused."""
    return free_port()

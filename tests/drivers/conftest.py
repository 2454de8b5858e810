"""The driver conformance suite: every test here runs against every storage engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shardq.drivers import Driver, connect


@pytest.fixture
async def driver(database_url: str) -> AsyncIterator[Driver]:
    """An open runner-side driver on this test's fresh database."""
    d = connect(database_url, runner=True)
    await d.open()
    try:
        yield d
    finally:
        await d.close()

"""The fault suite's tests: its checks on made-up runs, and its short run on both engines."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: the fault suite's short run (deselect with -m 'not chaos')"
    )

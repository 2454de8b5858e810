from __future__ import annotations

from typing import Any

import pytest

from shardq import Config


@pytest.mark.parametrize(
    "change",
    [
        {"concurrency": "64"},
        {"concurrency": True},
        {"concurrency": 64.0},
        {"shards": 10**400},
        {"max_payload_bytes": None},
        {"retention": float("inf")},
        {"retention": 10**400},
        {"heartbeat": float("nan")},
        {"drain_timeout": "30"},
        {"prune_interval": False},
        {"default_max_attempts": 1001},
        {"machine_id": 1.0},
        {"database_url": 5},
        {"retry": "fast"},
    ],
)
def test_a_setting_of_the_wrong_type_or_size_is_a_value_error_naming_it(
    change: dict[str, Any],
) -> None:
    (name,) = change
    with pytest.raises(ValueError, match=name):
        Config(**change)


def test_whole_numbers_of_seconds_are_fine() -> None:
    assert Config(retention=60, heartbeat=1, drain_timeout=0).retention == 60


def test_the_docstring_says_what_every_setting_does() -> None:
    import dataclasses

    doc = Config.__doc__ or ""
    missing = [f.name for f in dataclasses.fields(Config) if f"``{f.name}``" not in doc]
    assert not missing, f"Config's docstring does not describe {missing}"

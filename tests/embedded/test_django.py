"""shardq.contrib.django: Django's Tasks framework on shardq, in a small project run in a
process of its own on each engine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("django")
ROOT = Path(__file__).resolve().parents[2]


def _run(database: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DJSHOP_DATABASE": database}
    env["DJANGO_SETTINGS_MODULE"] = "tests.apps.djshop.settings"
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip


async def test_tasks_enqueue_in_django_transactions_and_run(database_url: str) -> None:
    url = database_url
    engine = "sqlite" if url.startswith("sqlite:") else "postgres"
    run = _run(url, "-m", "tests.apps.djshop.scenario")
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    assert seen["url"] == ("sqlite" if engine == "sqlite" else "postgresql")
    if engine == "sqlite":
        assert seen["not started"] is True and seen["started by request"] is True
    assert seen["handlers"] == [
        "tests.apps.djshop.shop.tasks.attempt",
        "tests.apps.djshop.shop.tasks.boom",
        "tests.apps.djshop.shop.tasks.send_receipt",
    ]
    assert seen["committed"] == ["SUCCESSFUL", {"sent": "a@b.c"}, 1]
    assert seen["rolled back"] == "TaskResultDoesNotExist"
    assert seen["failed"] == ["FAILED", "builtins.ValueError"] and seen["failed traceback"]
    assert seen["context"] is True and seen["deferred"] == "READY"
    assert seen["priority"] == "critical"
    assert seen["sent"] == [1] and seen["orders"] == 1

    stats = _run(url, "-m", "django", "shardq", "--json", "stats")
    assert stats.returncode == 0, stats.stderr
    counts = json.loads(stats.stdout)
    assert counts["by_status"] | {"processing": 0} == {
        "queued": 1,
        "processing": 0,
        "complete": 2,
        "failed": 1,
        "cancelled": 0,
    }

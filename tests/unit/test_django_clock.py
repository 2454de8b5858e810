"""The Django backend reads the time of its service's clock: a job's delay is counted from
the service's now, and a result's times are the service's."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytest.importorskip("django")

#: Run in a process of its own: Django is configured once per process.
SCRIPT = textwrap.dedent(
    """
    import datetime as dt
    import json
    import sys

    import django
    from django.conf import settings

    settings.configure(
        USE_TZ=True,
        INSTALLED_APPS=[],
        TASKS={
            "default": {
                "BACKEND": "shardq.contrib.django.ShardqBackend",
                "OPTIONS": {"URL": sys.argv[1]},
            }
        },
    )
    django.setup()
    try:
        from django.tasks import task, task_backends
    except ImportError:
        from django_tasks import task, task_backends

    import shardq.contrib.django.backend as backend
    from shardq import FakeClock, JobService

    CLOCK = FakeClock(now_ms=1_900_000_000_000)
    backend.JobService = lambda url, runner: JobService(url, runner=runner, clock=CLOCK)


    @task
    def ping(n):
        return n


    due = dt.datetime.fromtimestamp(CLOCK.now_ms() / 1000 + 3600, dt.UTC)
    result = ping.using(run_after=due).enqueue(1)
    status = task_backends["default"].jobs.status_sync(result.id)
    context = backend.context_for(ping, result.id, 1, [1], {}, clock=CLOCK)
    print(json.dumps({
        "now": CLOCK.now_ms() / 1000,
        "enqueued_at": result.enqueued_at.timestamp(),
        "created_at": status.created_at.timestamp(),
        "run_at": status.run_at.timestamp(),
        "context_started_at": context.task_result.started_at.timestamp(),
    }))
    """
)


def test_run_after_and_result_times_are_of_the_service_clock(tmp_path: Path) -> None:
    script = tmp_path / "djclock.py"
    script.write_text(SCRIPT)
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    run = subprocess.run(
        [sys.executable, str(script), url],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    seen = json.loads(run.stdout.splitlines()[-1])
    now = seen["now"]
    assert seen["enqueued_at"] == seen["created_at"] == now
    assert seen["run_at"] == now + 3600
    assert seen["context_started_at"] == now

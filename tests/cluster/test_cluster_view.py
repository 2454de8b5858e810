"""The whole cluster as one picture, from any process; drain; a killed runner leaves it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from typing import Any

import pytest

from shardq import JobError, JobService
from shardq.cluster import ClusterView

from .conftest import ROOT, Cluster, eventually

pytestmark = pytest.mark.postgres

#: What changes from one heartbeat to the next, left out when comparing views.
_VOLATILE = {"heartbeat_at", "running", "jobs_per_s"}


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shardq", "--database-url", url, *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _stable(view: dict[str, Any]) -> dict[str, Any]:
    return {
        "runners": [{k: v for k, v in r.items() if k not in _VOLATILE} for r in view["runners"]],
        "shard_map": view["shard_map"],
        "handovers": view["handovers"],
        "events": view["events"],
    }


async def _settled(jobs: JobService, runners: int) -> ClusterView:
    async def check() -> ClusterView | None:
        view = await jobs.cluster()
        if len(view.runners) == runners and not view.handovers:
            return view
        return None

    result: ClusterView = await eventually(check, what=f"{runners} runners to share the shards")
    return result


async def test_every_process_sees_the_same_cluster(cluster: Cluster) -> None:
    workers = [await cluster.start_worker(concurrency=4) for _ in range(2)]
    async with (
        JobService(cluster.url, concurrency=8) as runner,
        JobService(cluster.url, runner=False) as web,
    ):
        view = await _settled(web, 3)
        assert {r.pid for r in view.runners} >= {w.pid for w in workers}
        assert {r.id for r in view.runners} == {runner.runner_id, *(w.runner_id for w in workers)}
        # Every shard has exactly one owner, and the owners' lists say the same.
        assert None not in view.shard_map
        for r in view.runners:
            assert r.shards == [s for s, o in enumerate(view.shard_map) if o == r.id]
            assert r.capacity in (4, 8) and not r.draining
        assert sum(len(r.shards) for r in view.runners) == view.shards
        joined = [e.runner for e in view.events if e.kind == "joined"]
        assert sorted(joined) == sorted(r.id for r in view.runners)
        assert (await runner.cluster()).this_runner == runner.runner_id
        assert view.this_runner is None

        cli = _cli(cluster.url, "runners", "--json")
        assert cli.returncode == 0, cli.stderr
        from_cli = json.loads(cli.stdout)
        here = [(await p.cluster()).to_dict() for p in (runner, web)]
        assert _stable(from_cli) == _stable(here[0]) == _stable(here[1])
        text = _cli(cluster.url, "runners")
        assert all(str(w.runner_id) in text.stdout for w in workers), text.stdout


async def test_runners_publish_their_load_in_the_heartbeat(cluster: Cluster) -> None:
    worker = await cluster.start_worker(concurrency=4)
    async with JobService(cluster.url, runner=False) as web:
        await _settled(web, 1)
        ids = await web.submit("sleep", [{"s": 3}] * 6)

        async def busy() -> bool:
            (me,) = (await web.cluster()).runners
            return me.id == worker.runner_id and me.running == 4 and me.capacity == 4

        await eventually(busy, timeout=10, what="the heartbeat to show 4 of 4 running")
        for job_id in ids:
            await web.cancel(job_id)


async def test_drain_moves_every_shard_and_loses_nothing(cluster: Cluster) -> None:
    workers = [await cluster.start_worker(concurrency=8) for _ in range(3)]
    victim = workers[0]
    async with JobService(cluster.url, runner=False) as web:
        await _settled(web, 3)
        ids = await web.submit("sleep", [{"s": 1, "i": i} for i in range(60)])

        async def victim_busy() -> bool:
            n = await cluster.db.fetchval(
                "SELECT count(*) FROM jobs WHERE state = 'processing' AND owner = $1",
                victim.runner_id,
            )
            return bool(n)

        await eventually(victim_busy, timeout=10, what="the victim to run jobs")
        drained = _cli(cluster.url, "drain", victim.runner_id or "", "--timeout", "30")
        assert drained.returncode == 0, drained.stdout + drained.stderr
        view = await web.cluster()
        (me,) = [r for r in view.runners if r.id == victim.runner_id]
        assert me.draining and me.shards == []
        assert victim.runner_id not in view.shard_map and None not in view.shard_map
        assert any(e.kind == "drain" and e.runner == victim.runner_id for e in view.events)
        assert victim.proc.poll() is None  # drained, still up

        for job_id in ids:
            st = await web.wait(job_id, timeout=30)
            # Its running jobs finished where they were: none interrupted, none lost.
            assert (st.status, st.attempts) == ("complete", 1)
        # Nothing new goes to the drained runner.
        later = await web.submit("sleep", [{"s": 0}] * 30)
        done = [(await web.wait(i, timeout=30)).result for i in later]
        assert all(r is not None and r["runner"] != victim.runner_id for r in done)


async def test_drain_refuses_what_it_cannot_do(cluster: Cluster) -> None:
    a, b = [await cluster.start_worker(concurrency=2) for _ in range(2)]
    async with JobService(cluster.url, runner=False) as web:
        await _settled(web, 2)
        with pytest.raises(JobError) as e:
            await web.drain("no-such-runner")
        assert e.value.reason == "NotFound"
        with pytest.raises(JobError) as e:
            await web.drain("")
        assert e.value.reason == "Validation"
        await web.drain(a.runner_id or "")
        with pytest.raises(JobError, match="already draining"):
            await web.drain(a.runner_id or "")
        with pytest.raises(JobError, match="last runner serving"):
            await web.drain(b.runner_id or "")
        cli = _cli(cluster.url, "drain", b.runner_id or "")
        assert cli.returncode != 0 and "last runner serving" in cli.stderr
        view = await web.cluster()
        assert [r.draining for r in view.runners if r.id == b.runner_id] == [False]


async def test_a_runner_killed_9_leaves_the_view_at_once(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a heartbeat of a minute, only the session's end can explain a prompt change.
    monkeypatch.setenv("SHARDQ_TEST_HEARTBEAT", "60")
    workers = [await cluster.start_worker(concurrency=2) for _ in range(3)]
    victim = workers[1]
    async with JobService(cluster.url, runner=False) as web:
        await _settled(web, 3)
        victim.kill9()
        killed = asyncio.get_running_loop().time()

        async def gone() -> bool:
            view = await web.cluster()
            return victim.runner_id not in {r.id for r in view.runners} and any(
                e.kind == "gone" and e.runner == victim.runner_id for e in view.events
            )

        await eventually(gone, timeout=10, what="the killed runner to leave the view")
        assert asyncio.get_running_loop().time() - killed < 3
        view = await _settled(web, 2)
        assert victim.runner_id not in view.shard_map


async def test_an_embedded_view_is_its_one_runner(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    async with JobService(url, concurrency=3) as jobs:
        view = await jobs.cluster()
        (me,) = view.runners
        assert (view.mode, me.id, me.capacity) == ("embedded", jobs.runner_id, 3)
        assert me.shards == list(range(view.shards)) == list(range(len(view.shard_map)))
        with pytest.raises(JobError, match="stop it instead"):
            await jobs.drain(jobs.runner_id)
        with pytest.raises(JobError):
            await jobs.cluster(events=-1)

"""The scheduler: the schedules of the shards a runner owns, each with a timer for its next
tick, fired as one job per tick.

Nothing polls. A schedule is armed when its shard is acquired (or the runner starts) and
when a change to it is announced (the ``schedules`` event); its timer runs on the runner's
clock. When timers fire, the ticks due are submitted together: each tick's job carries a
dedupe key made of the schedule's name and the tick, so a tick fired twice (by two runners
across a shard hand-over, or again after a crash before its tick was recorded) is still one
job. The tick is then recorded on the schedule (``after_ms``, never moved back), and the
job records its schedule and tick.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .._internal.tasks import cancel_and_wait
from ..clock import Clock, Timer
from ..config import Config
from ..drivers.base import Driver, FiredTick, JobRef, NewJob, Ownership, ScheduleRecord
from ..entity import job_entity
from ..ids import Snowflake
from ..schedules import ScheduleSpec, declared_in, record_of, schedule_shard, spec_of
from .instruments import Instruments

log = logging.getLogger("shardq.schedules")

#: Seconds between tries while storage refuses a scheduler's reads or writes (doubling).
_RETRY_FIRST, _RETRY_MAX = 0.1, 5.0


@dataclass(slots=True)
class _Armed:
    """A schedule this runner fires: every tick through ``after_ms`` is handled."""

    spec: ScheduleSpec
    shard: int
    after_ms: int
    last_job_id: int | None
    timer: Timer | None = None


class Scheduler:
    """Fires the schedules of the shards ``ownership`` holds; ``offer`` takes the jobs it
    submits (the runner's backlog keeps those of its own shards)."""

    def __init__(
        self,
        driver: Driver,
        config: Config,
        clock: Clock,
        ids: Snowflake,
        ownership: Ownership,
        handlers: Mapping[str, Any],
        instruments: Instruments,
        offer: Callable[[Iterable[JobRef]], None],
    ) -> None:
        self._driver = driver
        self._config = config
        self._clock = clock
        self._ids = ids
        self._ownership = ownership
        self._handlers = handlers
        self._instruments = instruments
        self._offer = offer
        self._armed: dict[str, _Armed] = {}
        self._due: set[str] = set()
        # Shards whose schedules are read again in the next step (None: every owned one).
        self._reload: set[int] | None = set()
        # One read of the schedules at a time: the last read armed is the freshest.
        self._loading = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        """Store the schedules declared in code (adding, changing and removing declared
        ones), then arm those of the owned shards."""
        shards = self._config.shards
        records = [
            record_of(s, schedule_shard(s.name, shards), declared=True)
            for s in declared_in(self._handlers)
        ]
        await self._driver.schedules.put(records, self._clock.now_ms(), declared_only=True)
        self._task = asyncio.create_task(self._run(), name="shardq-scheduler")
        self.changed(None)

    async def stop(self) -> None:
        """Disarm everything and stop firing."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        for name in list(self._armed):
            self._disarm(name)

    @property
    def armed(self) -> int:
        """Schedules armed here."""
        return len(self._armed)

    # -- what changes ----------------------------------------------------------------------

    def changed(self, shards: Collection[int] | None) -> None:
        """The schedules of ``shards`` (None: all) may have changed: read them again."""
        if shards is None or self._reload is None:
            self._reload = None
        else:
            self._reload.update(shards)
        self._wake.set()

    def shards_changed(self, acquired: set[int], lost: set[int]) -> None:
        """Ownership moved: disarm the schedules of ``lost`` shards, arm ``acquired`` ones."""
        for name, armed in list(self._armed.items()):
            if armed.shard in lost:
                self._disarm(name)
        if acquired:
            self.changed(acquired)

    def _disarm(self, name: str) -> None:
        armed = self._armed.pop(name, None)
        self._due.discard(name)
        if armed is not None and armed.timer is not None:
            armed.timer.cancel()

    def _arm(self, r: ScheduleRecord) -> None:
        spec = spec_of(r)
        old = self._armed.get(r.name)
        after = r.after_ms
        if old is not None and old.spec == spec:
            after = max(after, old.after_ms)
        self._disarm(r.name)
        if r.paused:
            return
        armed = _Armed(spec, r.shard, after, r.last_job_id)
        self._armed[r.name] = armed
        self._set_timer(armed)

    def _set_timer(self, armed: _Armed) -> None:
        name = armed.spec.name
        if self._armed.get(name) is not armed:
            return  # disarmed while its tick was being fired
        try:
            tick = armed.spec.next_tick(armed.after_ms)
        except Exception:
            log.exception("schedule %r cannot compute its next tick; it is not armed", name)
            return
        if tick is None:
            return
        delay = max(0, tick - self._clock.now_ms()) / 1000
        armed.timer = self._clock.call_later(delay, lambda: self._timer_fired(name))

    def _timer_fired(self, name: str) -> None:
        self._due.add(name)
        self._wake.set()

    # -- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        retry = _RETRY_FIRST
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                if self._reload is None or self._reload:
                    await self._load()
                if self._due:
                    await self._fire()
                retry = _RETRY_FIRST
            except Exception as e:
                if self._driver.unreachable(e):
                    log.warning("schedules: storage unreachable (%s); retrying in %.1fs", e, retry)
                else:
                    log.exception("schedules: a step failed; retrying in %.1fs", retry)
                await self._clock.sleep(retry)
                retry = min(retry * 2, _RETRY_MAX)
                self._wake.set()

    async def reload(self, shards: Collection[int]) -> None:
        """Read the schedules of ``shards`` and arm them afresh now (this process changed
        them: the change applies before the call that made it returns)."""
        self._reload = None if self._reload is None else self._reload | set(shards)
        await self._load()

    async def _load(self) -> None:
        """Read the schedules of the shards marked for reloading and arm them afresh."""
        async with self._loading:
            await self._load_marked()

    async def _load_marked(self) -> None:
        wanted, self._reload = self._reload, set()
        owned = self._ownership.owned()
        if wanted is None:
            shards = None if owned is None else set(owned)
        else:
            shards = wanted if owned is None else wanted & set(owned)
        try:
            records = await self._driver.schedules.load(shards)
        except BaseException:
            self.changed(wanted)
            raise
        owned = self._ownership.owned()  # it may have moved during the read
        found = {r.name: r for r in records if owned is None or r.shard in owned}
        for name, armed in list(self._armed.items()):
            if (shards is None or armed.shard in shards) and name not in found:
                self._disarm(name)
        for r in found.values():
            self._arm(r)

    async def _fire(self) -> None:
        """Submit the jobs of the ticks due now, record the ticks, arm the next ones."""
        names, self._due = self._due, set()
        try:
            await self._fire_ticks(names)
        except BaseException:
            self._due.update(n for n in names if n in self._armed)
            raise

    async def _fire_ticks(self, names: set[str]) -> None:
        now = self._clock.now_ms()
        batch: list[tuple[_Armed, list[int], int]] = []
        for name in sorted(names):
            armed = self._armed.get(name)
            if armed is None:
                continue
            armed.timer = None
            plan = armed.spec.plan(armed.after_ms, now)
            if plan.through is None:
                self._set_timer(armed)  # woken early: nothing due yet
            else:
                batch.append((armed, plan.fire, plan.through))
        if not batch:
            return
        busy = await self._driver.schedules.unfinished(
            {a.last_job_id for a, fire, _ in batch
             if a.spec.overlap == "skip" and fire and a.last_job_id is not None}
        )  # fmt: skip
        jobs: list[NewJob] = []
        ticks: list[FiredTick] = []
        for armed, due, through in batch:
            fire = due
            if armed.spec.overlap == "skip":
                # Ticks after the first would each find the one before unfinished.
                fire = [] if armed.last_job_id in busy else due[:1]
            ticks.append(FiredTick(armed.spec.name, through))
            for tick in fire:
                jobs.append(self._job(armed.spec, tick, now))
                ticks.append(FiredTick(armed.spec.name, through, tick))
        fresh = await self._submit(jobs, ticks)
        await self._driver.schedules.fired(ticks)
        self._offer(fresh)
        for armed, _, through in batch:
            armed.after_ms = max(armed.after_ms, through)
            self._set_timer(armed)

    async def _submit(self, jobs: list[NewJob], ticks: list[FiredTick]) -> list[JobRef]:
        """Insert the ticks' jobs; fill in each fired tick's job id (a tick fired before
        answers its existing job). Returns the refs of the jobs new here."""
        if not jobs:
            return []
        results = await self._driver.insert_jobs(jobs)
        fired = iter(t for t in ticks if t.tick is not None)
        fresh: list[JobRef] = []
        for job, (job_id, duplicate), tick in zip(jobs, results, fired, strict=True):
            tick.job_id = job_id
            armed = self._armed.get(tick.name)
            if armed is not None:
                armed.last_job_id = job_id
            if not duplicate:
                fresh.append(JobRef(job.id, job.priority, job.run_at, job.key, job.shard, job.type))
                self._instruments.submitted(job.type, job.priority)
        return fresh

    def _job(self, spec: ScheduleSpec, tick: int, now: int) -> NewJob:
        job_id = self._ids.next()
        key = spec.job_key
        return NewJob(
            id=job_id,
            type=spec.job_type,
            payload=spec.payload,
            priority=spec.priority,
            key=key,
            shard=job_entity(job_id, key, self._config.shards).shard,
            dedupe_key=spec.dedupe_key(tick),
            max_attempts=self._config.default_max_attempts,
            timeout=None,
            duration="short",
            batch_id=None,
            run_at=now,
            created_at=now,
            context=None,
        )

"""What holds a queued job back when its turn comes: a paused type or key, a type's slots
and rate, a throttle, a key's rate.

A type's controls hold cluster-wide: storage admits the starts of a limited type in the
step's transaction (``Driver.advance(limited=...)``), and this runner only remembers what
storage refused (``hold``) so that it stops asking until something changes: a slot frees
(a job finishes here, or another process announces finished jobs), the type is resumed or
its limits change, or the time storage named comes. A key's controls are this runner's
alone, as the key is: its concurrency sits in the key's mailbox, its rate in a bucket here.

A held job is *parked*: taken out of its window (or left the scheduled head of its
mailbox) and kept, in pick order, until its hold ends. A type's park is bounded; past the
bound its jobs stay in storage, and reads of the ready windows skip the type until its
park has drained.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections.abc import Callable, Collection, Iterable

from ..clock import Clock
from ..drivers.base import Driver, JobRef, LimitRecord, RateSpec

log = logging.getLogger("shardq.runner")

#: Parked jobs kept in memory per held type; more stay in storage.
MAX_PARKED = 1_000
#: A type waiting for a slot asks storage again after this long (ms) even if no finish was
#: heard: a slot also frees when a dead runner's jobs are queued again, unannounced.
SLOT_RECHECK_MS = 1_000
# Key buckets kept before the full ones (the same as no bucket) are dropped.
_PRUNE_BUCKETS = 10_000


class Gates:
    """The controls in force on this runner, and the jobs they hold back."""

    def __init__(
        self, driver: Driver, clock: Clock, wake: asyncio.Event, spill: Callable[[JobRef], None]
    ) -> None:
        """``spill(ref)`` leaves a job a full park cannot take to storage."""
        self._driver = driver
        self._spill = spill
        self._clock = clock
        self._wake = wake
        self._controls: dict[str, LimitRecord] = {}
        self._paused_keys: set[str] = set()
        #: Types storage refused, with when to ask again (0: when a slot frees).
        self._held: dict[str, int] = {}
        self._recheck: dict[str, int] = {}
        self._parked: dict[str, list[JobRef]] = {}
        #: Types whose park is full: reads of the ready windows skip them.
        self.full: set[str] = set()
        # Types reads have skipped: once no longer skipped, their jobs are read again.
        self._skipped: set[str] = set()
        # Keys out of rate tokens: (when the next token comes, ref).
        self._key_waits: list[tuple[int, int, JobRef]] = []
        # Per key: (tokens, as of Unix ms, capacity, ms per token).
        self._key_buckets: dict[str, tuple[float, int, int, float]] = {}
        self._prune_above = _PRUNE_BUCKETS
        #: When each shard was gained (monotonic seconds): a key's bucket starts empty
        #: until its runner has owned the shard for a whole refill, so a hand-over never
        #: lets the previous owner's starts and a full bucket add up.
        self._gained: dict[int, float] = {}
        self._default_gained = clock.monotonic()
        self._writes: set[asyncio.Task[None]] = set()
        self._watched_at = float("-inf")
        #: True while any control is in force (the pick skips every check otherwise).
        self.active = False
        #: A read of the controls in flight (another process changed them).
        self.loading: asyncio.Future[None] | None = None

    # -- what is in force ----------------------------------------------------------------

    async def load(self) -> None:
        """Read the controls from storage; whatever they no longer hold is released."""
        records = await self._driver.controls.limits()
        keys = await self._driver.controls.paused_keys()
        self._controls = {r.job_type: r for r in records}
        self._paused_keys = set(keys)
        # A change of limits or a resume is a reason to ask storage again.
        self._held = {t: u for t, u in self._held.items() if u > 0 and self._type_held(t)}
        self.active = bool(
            self._controls
            or self._paused_keys
            or self._held
            or self._parked
            or self._key_waits
            or self._skipped
        )
        self._wake.set()

    async def settled(self) -> None:
        """Wait for a read of the controls in flight. Notifications arrive in commit order:
        a step that handles jobs announced after a pause (or a new limit) must see it."""
        loading = self.loading
        if loading is not None and not loading.done():
            await asyncio.wait([loading])

    def _type_held(self, job_type: str) -> bool:
        rec = self._controls.get(job_type)
        return rec is not None and (
            rec.paused or rec.concurrency is not None or rec.rate is not None
        )

    def limited(self, refs: Iterable[JobRef]) -> frozenset[str]:
        """The types among ``refs`` that storage must admit (they have type controls)."""
        controls = self._controls
        if not controls:
            return frozenset()
        now = self._clock.now_ms()
        return frozenset(
            r.type
            for r in refs
            if (c := controls.get(r.type)) is not None
            and (
                c.paused
                or c.concurrency is not None
                or c.rate is not None
                or (c.throttled_until or 0) > now
            )
        )

    def key_concurrency(self, job_type: str) -> int:
        """How many jobs of one key may run at once when its next job is of ``job_type``."""
        rec = self._controls.get(job_type)
        return rec.key_concurrency if rec is not None and rec.key_concurrency else 1

    def excluded(self) -> frozenset[str]:
        """Types the ready windows' reads skip: paused, or with a full park."""
        paused = {t for t, r in self._controls.items() if r.paused}
        skipped = frozenset(paused | self.full)
        self._skipped |= skipped
        return skipped

    # -- holding -------------------------------------------------------------------------

    def admits(self, ref: JobRef, now: int) -> bool:
        """True if ``ref`` may be picked now; else it is parked (the caller has taken it
        out of its window). A key's rate token is used here."""
        t = ref.type
        until = self._held.get(t)
        if until is not None:
            if until > now or (until == 0 and self._recheck.get(t, 0) > now):
                self._park(ref)
                return False
            del self._held[t]
        rec = self._controls.get(t)
        if rec is not None and (rec.paused or (rec.throttled_until or 0) > now):
            self._park(ref)
            return False
        if ref.key is not None:
            if ref.key in self._paused_keys:
                self._park(ref)
                return False
            if rec is not None and rec.key_rate is not None:
                return self._key_token(ref, rec.key_rate, now)
        return True

    def _park(self, ref: JobRef) -> None:
        parked = self._parked.setdefault(ref.type, [])
        if ref.key is None and len(parked) >= MAX_PARKED:
            self.full.add(ref.type)
            self._spill(ref)
            return
        parked.append(ref)

    def _key_token(self, ref: JobRef, rate: RateSpec, now: int) -> bool:
        key = ref.key
        assert key is not None
        cap = rate.burst + 1
        per_token = rate.per * 1000 / rate.count
        bucket = self._key_buckets.get(key)
        if bucket is None:
            owned_for = self._clock.monotonic() - self._gained.get(ref.shard, self._default_gained)
            start = cap if owned_for * 1000 >= cap * per_token else 0.0
            bucket = (start, now, cap, per_token)
            if len(self._key_buckets) >= self._prune_above:
                self._prune_buckets(now)
        tokens, at = bucket[0], bucket[1]
        tokens = min(cap, tokens + max(0, now - at) / per_token)
        if tokens >= 1:
            self._key_buckets[key] = (tokens - 1, now, cap, per_token)
            return True
        self._key_buckets[key] = (tokens, now, cap, per_token)
        due = now + int((1 - tokens) * per_token) + 1
        heapq.heappush(self._key_waits, (due, ref.id, ref))
        return False

    def _prune_buckets(self, now: int) -> None:
        """Drop the key buckets that have refilled (a full bucket is what a new one is)."""
        self._key_buckets = {
            k: b for k, b in self._key_buckets.items() if b[0] + max(0, now - b[1]) / b[3] < b[2]
        }
        self._prune_above = max(_PRUNE_BUCKETS, 2 * len(self._key_buckets))

    def hold(self, held: dict[str, int]) -> None:
        """Storage refused starts of these types: ask again at each one's time, or when a
        slot frees (0), or at the latest after ``SLOT_RECHECK_MS``."""
        recheck = self._clock.now_ms() + SLOT_RECHECK_MS
        for t, until in held.items():
            self._held[t] = max(until, self._held.get(t, until)) if until else 0
            if not until:
                self._recheck[t] = recheck
                self._hear_finishes()
        self.active = True

    def _hear_finishes(self) -> None:
        """A type waits for a slot that a job finishing elsewhere may free: make sure this
        process hears of finished jobs (renewed at most once a second)."""
        now = self._clock.monotonic()
        if now - self._watched_at < 1.0:
            return
        self._watched_at = now
        task = asyncio.get_running_loop().create_task(self._watch())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _watch(self) -> None:
        try:
            await self._driver.keep_watching()
        except Exception:
            log.exception("subscribing to finished jobs failed; slots are re-checked each second")

    def throttle(self, job_type: str, until: int) -> None:
        """A handler throttled its (keyless) type: hold it here now, and everywhere once
        storage has it."""
        self.hold({job_type: until})
        task = asyncio.get_running_loop().create_task(self._write_throttle(job_type, until))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _write_throttle(self, job_type: str, until: int) -> None:
        try:
            await self._driver.controls.throttle(job_type, until, self._clock.now_ms())
        except Exception:
            log.exception("storing the throttle of %s failed; it holds here only", job_type)

    def slot_freed(self, job_types: Collection[str] | None = None) -> None:
        """Jobs finished (of ``job_types``, or of unknown types elsewhere): the types
        waiting for a slot ask storage again."""
        waiting = [t for t, u in self._held.items() if u == 0]
        for t in waiting:
            if job_types is None or t in job_types:
                del self._held[t]
                self._recheck.pop(t, None)
                self._wake.set()

    # -- releasing -----------------------------------------------------------------------

    def next_release(self) -> int | None:
        """The soonest Unix ms at which a hold ends by itself (maybe past already: a step
        that outlasted a rate's next token must not leave its jobs parked), if any."""
        now = self._clock.now_ms()
        times = [u if u > 0 else self._recheck.get(t, now) for t, u in self._held.items()]
        # A throttle long over is no reason to wake.
        times += [u for r in self._controls.values() if (u := r.throttled_until or 0) > now]
        if self._key_waits:
            times.append(self._key_waits[0][0])
        return min(times) if times else None

    def release(self, now: int) -> tuple[list[JobRef], bool]:
        """Take back the parked jobs no longer held, in pick order, and whether reads of
        the windows skipped types they no longer skip (their jobs must be read again)."""
        out: list[JobRef] = []
        spilled = False
        for t, until in list(self._held.items()):
            if 0 < until <= now or (until == 0 and self._recheck.get(t, 0) <= now):
                del self._held[t]
                self._recheck.pop(t, None)
        for t in list(self._parked):
            if self._still_held(t, now):
                continue
            out += self._parked.pop(t)
            self.full.discard(t)
        if self._skipped:
            skipped_now = self.excluded()
            spilled = bool(self._skipped - skipped_now)
            self._skipped = set(skipped_now)
        waits = self._key_waits
        while waits and waits[0][0] <= now:
            out.append(heapq.heappop(waits)[2])
        for key_ref in [r for r in out if r.key is not None and r.key in self._paused_keys]:
            # A paused key's head stays parked.
            out.remove(key_ref)
            self._parked.setdefault(key_ref.type, []).append(key_ref)
        if not self._held and not self._controls and not self._paused_keys:
            self.active = bool(self._key_waits or self._parked or self._skipped)
        return out, spilled

    def _still_held(self, job_type: str, now: int) -> bool:
        until = self._held.get(job_type)
        if until is not None and (
            until > now or (until == 0 and self._recheck.get(job_type, 0) > now)
        ):
            return True
        rec = self._controls.get(job_type)
        return rec is not None and (rec.paused or (rec.throttled_until or 0) > now)

    # -- shards --------------------------------------------------------------------------

    def shards_gained(self, shards: Iterable[int]) -> None:
        """Shards newly owned: their keys' rate buckets start empty for a while."""
        mono = self._clock.monotonic()
        for s in shards:
            self._gained[s] = mono

    def forget_shards(self, lost: set[int], forget: Callable[[JobRef], None]) -> None:
        """Drop the parked jobs of ``lost`` shards (``forget`` each)."""
        for t, refs in list(self._parked.items()):
            keep = [r for r in refs if r.shard not in lost]
            for r in refs:
                if r.shard in lost:
                    forget(r)
            self._parked[t] = keep
        kept = [w for w in self._key_waits if w[2].shard not in lost]
        for w in self._key_waits:
            if w[2].shard in lost:
                forget(w[2])
        heapq.heapify(kept)
        self._key_waits = kept

    def parked_count(self) -> int:
        """Jobs parked now (the dashboard's "held" figure)."""
        return sum(len(v) for v in self._parked.values()) + len(self._key_waits)

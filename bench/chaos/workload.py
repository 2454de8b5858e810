"""A submitter process of the fault suite: ``python -m bench.chaos.workload``.

It submits a mixed load with ``JobService(url, runner=False)`` until a deadline and writes one
JSON line per submit to ``--out``: the ids returned, or the error (a submit that failed may
still have been committed; the checks then find its job in the database by its payload).

The jobs of a key belong to one submitter, which submits them one call after another, so a
key's submit order is the order of their ``q`` (a per-submitter sequence number carried in
the payload; a batch's items get consecutive numbers). Dedupe keys are drawn from a pool
shared by every submitter, so the same dedupe key is submitted several times, concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from shardq import JobService
from shardq.models import Priority

from .app import WORK

PRIORITIES: tuple[Priority, ...] = ("critical", "high", "normal", "low")


def clock() -> float:
    """CLOCK_MONOTONIC seconds (the same clock in every process of the machine)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass
class Submit:
    """One call to ``submit``: a single job (``items`` of one) or a batch."""

    items: list[dict[str, Any]]
    key: str | None = None
    dedupe: str | None = None
    delay: float = 0.0
    max_attempts: int = 6
    priority: Priority = "normal"
    options: dict[str, Any] = field(default_factory=dict)


class Mix:
    """The load's random choices, seeded: what the next submit is."""

    def __init__(self, seed: str, submitter: int, dedupe_pool: int) -> None:
        self.rng = random.Random(f"{seed}/{submitter}")
        self.submitter = submitter
        self.seq = 0
        self.dedupe_pool = dedupe_pool
        self.dedupe_tag = seed
        self.hot = [f"s{submitter}-hot{j}" for j in range(2)]
        self.warm = [f"s{submitter}-k{j}" for j in range(12)]

    def _key(self) -> str:
        return self.rng.choice(self.hot if self.rng.random() < 0.4 else self.warm)

    def _item(self, ms: int, expect: str = "complete", **extra: Any) -> dict[str, Any]:
        self.seq += 1
        return {"s": self.submitter, "q": self.seq, "ms": ms, "x": expect, **extra}

    def _maybe_key(self) -> str | None:
        return self._key() if self.rng.random() < 0.5 else None

    def next(self) -> Submit:
        """The next submit of the mix (shares in the comments)."""
        r = self.rng.random()
        prio = self.rng.choice(PRIORITIES)
        if r < 0.74:
            return self._plain(r, prio)
        if r < 0.91:
            return self._eventful(r)
        return self._pressing(r)

    def _plain(self, r: float, prio: Priority) -> Submit:
        rng = self.rng
        if r < 0.30:  # a keyed job
            return Submit([self._item(rng.randint(1, 20))], key=self._key(), priority=prio)
        if r < 0.38:  # a keyed batch: its items run in batch order
            key = self._key()
            return Submit([self._item(rng.randint(0, 5)) for _ in range(rng.randint(2, 5))], key)
        if r < 0.66:  # an unkeyed job
            return Submit([self._item(rng.randint(0, 20))], priority=prio)
        # an unkeyed batch
        return Submit([self._item(rng.randint(0, 5)) for _ in range(rng.randint(5, 20))])

    def _eventful(self, r: float) -> Submit:
        rng = self.rng
        if r < 0.82:  # fails once or twice, then completes
            key = self._maybe_key()
            return Submit([self._item(rng.randint(1, 10), fail=rng.randint(1, 2))], key=key)
        if r < 0.85:  # dead-lettered: refused at once, or out of attempts
            key = self._maybe_key()
            if rng.random() < 0.5:
                return Submit([self._item(2, "failed", bad=True)], key=key)
            return Submit([self._item(2, "failed", fail=99)], key=key, max_attempts=2)
        # delayed
        return Submit([self._item(rng.randint(1, 10))], delay=rng.uniform(0.2, 1.5))

    def _pressing(self, r: float) -> Submit:
        rng = self.rng
        if r < 0.95:  # long: likely in flight when a runner dies, and holds its key
            key = self._maybe_key()
            return Submit([self._item(rng.randint(800, 2500))], key=key)
        if r < 0.97:  # a burst on a hot key: a backlog for a runner taking the key over
            burst = [self._item(rng.randint(0, 3)) for _ in range(rng.randint(10, 30))]
            return Submit(burst, key=rng.choice(self.hot))
        # a dedupe key from the pool every submitter shares
        dedupe = f"dd-{self.dedupe_tag}-{rng.randrange(self.dedupe_pool)}"
        return Submit([self._item(rng.randint(1, 10))], dedupe=dedupe)


async def _submit_one(jobs: JobService, s: Submit) -> list[str]:
    payload: Any = s.items if len(s.items) > 1 else s.items[0]
    ids = await jobs.submit(
        WORK,
        payload,
        key=s.key,
        dedupe_key=s.dedupe,
        delay=s.delay,
        max_attempts=s.max_attempts,
        priority=s.priority,
    )
    return ids if isinstance(ids, list) else [ids]


async def run(url: str, mix: Mix, deadline: float, rate: float, out: TextIO) -> None:
    """Submit ``mix`` at about ``rate`` jobs/s until ``deadline`` (monotonic)."""
    async with JobService(url, runner=False) as jobs:
        started = clock()
        sent = 0
        backoff = 0.05
        while clock() < deadline:
            s = mix.next()
            line: dict[str, Any] = {
                "q": [i["q"] for i in s.items],
                "k": s.key,
                "d": s.dedupe,
                "t": clock(),
            }
            try:
                line["ids"] = await _submit_one(jobs, s)
                backoff = 0.05
            except Exception as e:  # the database is down or the session was killed
                line["err"] = f"{type(e).__name__}: {e}"[:300]
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            out.write(json.dumps(line) + "\n")
            out.flush()
            sent += len(s.items)
            # Pace the load: ahead of the rate, wait until the rate catches up.
            ahead = sent / rate - (clock() - started)
            if ahead > 0:
                await asyncio.sleep(min(ahead, max(0.0, deadline - clock())))


def main(argv: list[str] | None = None) -> int:
    """Parse the options and submit until the deadline."""
    p = argparse.ArgumentParser(prog="python -m bench.chaos.workload")
    p.add_argument("--url", required=True)
    p.add_argument("--index", type=int, required=True, help="this submitter's number")
    p.add_argument("--seed", required=True)
    p.add_argument("--deadline", type=float, required=True, help="CLOCK_MONOTONIC seconds")
    p.add_argument("--rate", type=float, required=True, help="jobs per second")
    p.add_argument("--dedupe-pool", type=int, default=40)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    mix = Mix(args.seed, args.index, args.dedupe_pool)
    with open(args.out, "a", encoding="utf-8") as out:
        asyncio.run(run(args.url, mix, args.deadline, args.rate, out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

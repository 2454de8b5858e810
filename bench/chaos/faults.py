"""The runner processes of a fault run, and the faults injected into them.

``Fleet`` starts ``shardq worker`` processes, restarts any that exits (as a service manager
would, and records the exit unless it was asked for), and knows when each process died.
``Faults`` draws the faults from a seeded generator: the first ones cover every kind once in
a shuffled order, the rest are drawn by weight, with random gaps between them.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg

from .check import Fault

ROOT = Path(__file__).resolve().parents[2]

#: Fault kinds per engine, with their weights once each kind has been drawn once.
KINDS: dict[str, dict[str, int]] = {
    "postgres": {
        "kill9": 4,
        "terminate": 2,
        "sigterm": 1,
        "pg_restart": 1,
        "pg_crash": 1,
        "cold_start": 1,
    },
    "sqlite": {"kill9": 4, "sigterm": 1},
}

#: Seconds a runner is up before it is sent SIGTERM.
SIGTERM_MIN_AGE = 2.0


def clock() -> float:
    """CLOCK_MONOTONIC seconds (the same clock in every process of the machine)."""
    return time.clock_gettime(time.CLOCK_MONOTONIC)


@dataclass
class Slot:
    """One runner position: the process serving it now and when it may be started again."""

    index: int
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None
    starts: int = 0
    expected_exit: bool = False
    started_at: float = 0.0


@dataclass
class Fleet:
    """``size`` runner processes of ``bench.chaos.app:jobs`` on ``url``."""

    url: str
    size: int
    directory: Path
    concurrency: int = 16
    slots: list[Slot] = field(default_factory=list)
    #: pid -> monotonic time its death was seen.
    deaths: dict[int, float] = field(default_factory=dict)
    #: Exits nobody asked for, and drains that did not exit with status 0.
    bad_exits: list[dict[str, Any]] = field(default_factory=list)
    _debug: list[str] = field(default_factory=list)

    def start(self) -> None:
        """Start every runner."""
        # With --debug (where the command has it) a runner that fails logs its traceback.
        usage = subprocess.run(
            [sys.executable, "-m", "shardq", "--help"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        self._debug = ["--debug"] if "--debug" in usage.stdout else []
        self.slots = [Slot(i) for i in range(self.size)]
        for slot in self.slots:
            self._spawn(slot)

    def _spawn(self, slot: Slot) -> None:
        slot.starts += 1
        log = self.directory / f"runner-{slot.index}-{slot.starts}.log"
        env = dict(
            os.environ,
            CHAOS_DIR=str(self.directory),
            CHAOS_CONCURRENCY=str(self.concurrency),
            PYTHONUNBUFFERED="1",
        )
        argv = [sys.executable, "-m", "shardq", *self._debug, "--database-url", self.url]
        argv.append("worker")
        with log.open("wb") as out:
            slot.proc = subprocess.Popen(
                [*argv, "--app", "bench.chaos.app:jobs"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the suite reaches the suite, not them
            )
        slot.restart_at = None
        slot.expected_exit = False
        slot.started_at = clock()

    def supervise(self, restart_delay: float = 0.5) -> None:
        """Note runners that exited on their own, and start any runner whose time has come."""
        now = clock()
        for slot in self.slots:
            proc = slot.proc
            if proc is not None and proc.poll() is not None:
                self.deaths.setdefault(proc.pid, now)
                if not slot.expected_exit:
                    self.bad_exits.append(
                        {"pid": proc.pid, "status": proc.returncode, "log": self._tail(slot)}
                    )
                    slot.restart_at = now + restart_delay
                slot.proc = None
            if slot.proc is None and slot.restart_at is not None and now >= slot.restart_at:
                self._spawn(slot)

    def _tail(self, slot: Slot) -> str:
        log = self.directory / f"runner-{slot.index}-{slot.starts}.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        return " | ".join(lines[-12:])[-3000:]

    async def kill9(self, slot: Slot, restart_after: float) -> int | None:
        """SIGKILL the slot's runner, wait for its death; restart it ``restart_after`` later."""
        proc = slot.proc
        if proc is None or proc.poll() is not None:
            return None
        slot.expected_exit = True
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait)
        self.deaths[proc.pid] = clock()
        slot.proc, slot.restart_at = None, clock() + restart_after
        return proc.pid

    async def sigterm(self, slot: Slot, restart_after: float, timeout: float = 30.0) -> int | None:
        """SIGTERM the slot's runner (it drains), wait for its exit, restart it later."""
        proc = slot.proc
        if proc is None or proc.poll() is not None:
            return None
        slot.expected_exit = True
        proc.send_signal(signal.SIGTERM)
        try:
            status = await asyncio.to_thread(proc.wait, timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            status = await asyncio.to_thread(proc.wait)
            self.bad_exits.append({"pid": proc.pid, "status": "drain timed out"})
        self.deaths.setdefault(proc.pid, clock())
        if status != 0:
            self.bad_exits.append({"pid": proc.pid, "status": status, "log": self._tail(slot)})
        if slot.proc is proc:
            slot.proc = None
        slot.restart_at = clock() + restart_after
        return proc.pid

    async def drain_all(self) -> None:
        """SIGTERM every runner and wait for them (no restart)."""
        await asyncio.gather(*(self.sigterm(s, math.inf) for s in self.slots))

    def kill_all(self) -> None:
        """SIGKILL whatever still runs (clean-up)."""
        for slot in self.slots:
            slot.restart_at = None
            if slot.proc is not None and slot.proc.poll() is None:
                slot.proc.kill()
                slot.proc.wait()


@dataclass
class Faults:
    """The seeded fault schedule of one run and the code that injects each kind."""

    engine: str
    fleet: Fleet
    rng: random.Random
    server: Any = None  # bench.pgserver.PrivatePostgres on PostgreSQL
    log: list[Fault] = field(default_factory=list)
    _pending: list[str] = field(default_factory=list)
    _draining: set[asyncio.Task[None]] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._pending = list(KINDS[self.engine])
        self.rng.shuffle(self._pending)

    def next_kind(self) -> str:
        """Every kind once (shuffled), then by weight."""
        if self._pending:
            return self._pending.pop()
        kinds = KINDS[self.engine]
        return self.rng.choices(list(kinds), weights=list(kinds.values()))[0]

    def _victim(self, min_age: float = 0.0) -> Slot | None:
        now = clock()
        alive = [
            s
            for s in self.fleet.slots
            if s.proc is not None
            and s.proc.poll() is None
            and not s.expected_exit
            and now - s.started_at >= min_age
        ]
        return self.rng.choice(alive) if alive else None

    async def inject(self, kind: str) -> Fault | None:
        """Inject one fault of ``kind``; None when it had no target (every runner down)."""
        actions: dict[str, Callable[[], Any]] = {
            "kill9": self._kill9,
            "sigterm": self._sigterm,
            "terminate": self._terminate,
            "pg_restart": lambda: self._server_down("fast"),
            "pg_crash": lambda: self._server_down("immediate"),
            "cold_start": self._cold_start,
        }
        fault: Fault | None = await actions[kind]()
        if fault is not None:
            self.log.append(fault)
        elif kind not in self._pending:
            self._pending.append(kind)  # drawn again next, so every kind still comes
        return fault

    def _restart_delay(self) -> float:
        # One runner on SQLite: restart at once, so the figure is the recovery time. With
        # several on PostgreSQL: the others take over first, which the figure measures.
        return 0.0 if self.fleet.size == 1 else self.rng.uniform(0.5, 2.0)

    async def _kill9(self) -> Fault | None:
        slot = self._victim()
        if slot is None:
            return None
        at = clock()
        pid = await self.fleet.kill9(slot, self._restart_delay())
        return Fault("kill9", at, pid) if pid else None

    async def _sigterm(self) -> Fault | None:
        # A process only just started may not handle SIGTERM yet (Python's default action
        # ends it at once): drain a runner that has been up a while.
        slot = self._victim(min_age=SIGTERM_MIN_AGE)
        if slot is None:
            return None
        proc = slot.proc
        assert proc is not None
        fault = Fault("sigterm", clock(), proc.pid)

        async def drain() -> None:
            await self.fleet.sigterm(slot, self._restart_delay())
            fault.detail["drained_s"] = round(clock() - fault.at, 3)

        # The drain goes on while the next faults come.
        task = asyncio.create_task(drain())
        self._draining.add(task)
        task.add_done_callback(self._draining.discard)
        await asyncio.sleep(0)  # the signal is sent before this returns
        return fault

    async def drained(self) -> None:
        """Wait for the drains under way."""
        await asyncio.gather(*self._draining)

    async def _terminate(self) -> Fault | None:
        """``pg_terminate_backend`` of every session of one runner (pool, listener, locks)."""
        slot = self._victim()
        if slot is None or slot.proc is None:
            return None
        pid = slot.proc.pid
        conn = await asyncpg.connect(self.fleet.url, timeout=5)
        try:
            at = clock()
            n = await conn.fetchval(
                "SELECT count(pg_terminate_backend(a.pid)) FROM pg_stat_activity a"
                " JOIN shardq_runners r ON r.app = a.application_name WHERE r.pid = $1",
                pid,
            )
        finally:
            await conn.close()
        return Fault("terminate", at, pid, {"sessions": int(n or 0)})

    async def _server_down(self, mode: str) -> Fault:
        """Stop the private server (``immediate`` is a crash), leave it down a moment, start it."""
        at = clock()
        await asyncio.to_thread(self.server.stop, mode)
        stop_s = clock() - at  # the server died somewhere within this
        down = self.rng.uniform(0.2, 1.5)
        await asyncio.sleep(down)  # the outage itself, not a wait for a condition
        await asyncio.to_thread(self.server.start)
        kind = "pg_crash" if mode == "immediate" else "pg_restart"
        return Fault(kind, at, None, {"stop_s": round(stop_s, 3), "down_s": round(clock() - at, 3)})

    async def _cold_start(self) -> Fault:
        """A crash of the server and of one runner; the runner is started again at once, so
        it starts while the server is down and then while it recovers ("starting up")."""
        at = clock()
        await asyncio.to_thread(self.server.stop, "immediate")
        stop_s = clock() - at
        slot = self._victim()
        pid = await self.fleet.kill9(slot, 0.0) if slot is not None else None
        self.fleet.supervise()  # starts it now
        await asyncio.sleep(self.rng.uniform(0.3, 1.5))  # the outage itself
        await asyncio.to_thread(self.server.start, False)
        await asyncio.to_thread(self.server.wait_ready)
        detail = {"runner_killed": pid, "stop_s": round(stop_s, 3)}
        return Fault("cold_start", at, None, {**detail, "down_s": round(clock() - at, 3)})

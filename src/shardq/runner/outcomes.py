"""The ends of attempts: queued for the next step's write, then settled in memory."""

from __future__ import annotations

from collections.abc import Callable, Collection

from .._internal.attempts import Attempt
from ..drivers.base import JobRef, Outcome, OutcomeKind
from .backlog import Backlog
from .instruments import Instruments

#: Called after each transition is durable: (job id, status entered).
TransitionCallback = Callable[[int, str], None]
STATUS_OF: dict[OutcomeKind, str] = {
    "complete": "complete",
    "retry": "queued",
    "snooze": "queued",
    "throttle": "queued",
    "failed": "failed",
    "cancelled": "cancelled",
}


class Outcomes:
    """Outcomes waiting to be written, and what memory does once one is written."""

    def __init__(
        self,
        backlog: Backlog,
        instruments: Instruments,
        running: dict[int, Attempt],
        cancel_pending: set[int],
        wake: Callable[[], None],
        on_transition: TransitionCallback | None,
    ) -> None:
        self._backlog = backlog
        self._instruments = instruments
        self._running = running
        self._cancel_pending = cancel_pending
        self._wake = wake
        self._on_transition = on_transition
        self.pending: list[tuple[Outcome, Attempt]] = []
        #: Set while the runner stops: retries are left to storage.
        self.stopping = False

    def finished(self, outcome: Outcome, attempt: Attempt) -> None:
        """An attempt is over: its outcome goes out with the next step."""
        self.pending.append((outcome, attempt))
        self._wake()

    def take(self) -> list[tuple[Outcome, Attempt]]:
        """Every outcome waiting, for one write."""
        batch, self.pending = self.pending, []
        return batch

    def put_back(self, batch: list[tuple[Outcome, Attempt]]) -> None:
        """Outcomes whose write failed: they go out first with the next step."""
        self.pending = batch + self.pending

    def settle(
        self,
        outcome: Outcome,
        attempt: Attempt,
        written: bool,
        now: int,
        owned: Collection[int] | None,
    ) -> None:
        """Forget a finished attempt whose outcome was just written (or fenced out); its
        slot was already counted free by the step that wrote it."""
        job = attempt.job
        self._running.pop(job.id, None)
        retry_ref = None
        if written:
            self._instruments.finished(job, outcome.kind)
            if outcome.kind in ("retry", "snooze", "throttle"):
                run_at = outcome.run_at if outcome.run_at is not None else outcome.at
                retry_ref = JobRef(job.id, job.priority, run_at, job.key, job.shard, job.type)
        backlog = self._backlog
        gates = backlog.gates
        if gates.active:
            gates.slot_freed((job.type,))
        if written and outcome.kind == "throttle" and job.key is None and retry_ref:
            # A keyed job holds its key by staying its head; a keyless one holds its type.
            gates.throttle(job.type, retry_ref.run_at)
        moved = owned is not None and job.shard not in owned
        if moved:
            retry_ref = None  # the shard moved on: its next owner runs the retry
        elif not written:
            # Fenced out (the job was recovered meanwhile): storage may hold it queued again.
            backlog.mark_ahead()
        backlog.known.discard(job.id)
        self._cancel_pending.discard(job.id)
        if retry_ref is not None and not self.stopping:
            # A keyed retry (or snooze) keeps the head of its mailbox: nothing of its key
            # overtakes it.
            if job.key is None:
                backlog.windows.place(retry_ref, now)
            else:
                backlog.mailboxes.retry(retry_ref)
        if job.key is not None:
            if moved or not written:
                # The key's jobs in memory no longer tell what comes next: the shard went to
                # another runner, or came back to this one after a recovery that queued this
                # job again, ahead of them. Storage says, in id order.
                backlog.mailboxes.reread(job.key, keep=not moved)
            else:
                backlog.mailboxes.release(job.key, now)
        if written:
            self.transition(job.id, STATUS_OF[outcome.kind])

    def transition(self, job_id: int, status: str) -> None:
        """Tell the service that ``job_id`` entered ``status`` (durably)."""
        if self._on_transition is not None:
            self._on_transition(job_id, status)

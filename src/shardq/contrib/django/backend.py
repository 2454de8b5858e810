"""``ShardqBackend``: Django's Tasks framework on shardq.

A task's job type is its module path (``shop.tasks.send_receipt``), its payload
``{"args": [...], "kwargs": {...}}``, and the job id is the ``TaskResult`` id. Django's
priorities (-100..100) map onto shardq's four: 50 and above critical, above 0 high, 0
normal, below 0 low. ``run_after`` becomes the job's delay.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime as dt
import threading
import traceback
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from django.utils.module_loading import import_string

from ...clock import SYSTEM_CLOCK, Clock
from ...errors import JobError
from ...jobs import JobService
from ...models import JobStatusResponse, Priority

if TYPE_CHECKING:
    from django_tasks.backends.base import BaseTaskBackend
    from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
    from django_tasks.exceptions import TaskResultDoesNotExist
else:
    try:  # Django 6 and later
        from django.tasks.backends.base import BaseTaskBackend
        from django.tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django.tasks.exceptions import TaskResultDoesNotExist
    except ImportError:  # the django-tasks backport
        from django_tasks.backends.base import BaseTaskBackend
        from django_tasks.base import Task, TaskContext, TaskError, TaskResult, TaskResultStatus
        from django_tasks.exceptions import TaskResultDoesNotExist

__all__ = [
    "FAILED_PREFIX",
    "ShardqBackend",
    "Task",
    "TaskFailed",
    "context_for",
    "database_url",
    "priority_of",
]

_STATUS = {
    "queued": TaskResultStatus.READY,
    "processing": TaskResultStatus.RUNNING,
    "complete": TaskResultStatus.SUCCESSFUL,
    "failed": TaskResultStatus.FAILED,
    "cancelled": TaskResultStatus.FAILED,
}
#: The error text of a failed task starts with this, then its exception's class path.
FAILED_PREFIX = "TaskFailed: "


class TaskFailed(Exception):
    """Raised by the worker for a task that raised: carries the exception's class path and
    its traceback into the job's stored error (and so into ``TaskResult.errors``)."""

    def __init__(self, error: BaseException) -> None:
        kind = type(error)
        self.path = f"{kind.__module__}.{kind.__qualname__}"
        super().__init__(f"{self.path}\n{''.join(traceback.format_exception(error))}")


def database_url(alias: str = DEFAULT_DB_ALIAS) -> str:
    """The shardq URL of Django's database ``alias`` (PostgreSQL or SQLite)."""
    db = settings.DATABASES[alias]
    engine = db.get("ENGINE", "")
    if engine.endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    if engine.endswith(("postgresql", "postgis")):
        user = quote(db.get("USER") or "", safe="")
        password = quote(db.get("PASSWORD") or "", safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host, port = db.get("HOST") or "localhost", db.get("PORT") or "5432"
        return f"postgresql://{auth}{host}:{port}/{quote(db['NAME'], safe='')}"
    raise ValueError(f"shardq runs on PostgreSQL or SQLite; database {alias!r} is {engine}")


def priority_of(value: int) -> Priority:
    """shardq's priority for Django's -100..100."""
    if value >= 50:
        return "critical"
    return "high" if value > 0 else "normal" if value == 0 else "low"


class ShardqBackend(BaseTaskBackend):
    """Enqueues Django tasks as shardq jobs; reads their results back.

    ``OPTIONS``: ``URL`` (a shardq database URL; by default that of Django's ``DATABASE``,
    which is also what lets an enqueue join ``transaction.atomic()``), ``DATABASE`` (the
    Django database alias, ``"default"``), ``MAX_ATTEMPTS`` (1: a Django task runs once
    unless told otherwise), ``MODULES`` (task modules the worker imports besides each
    application's ``tasks``).
    """

    supports_defer = True
    supports_async_task = True
    supports_get_result = True
    supports_priority = True

    def __init__(self, alias: str, params: dict[str, Any]) -> None:
        super().__init__(alias, params)
        self.database: str = self.options.get("DATABASE", DEFAULT_DB_ALIAS)
        self.max_attempts = int(self.options.get("MAX_ATTEMPTS", 1))
        self.modules: list[str] = list(self.options.get("MODULES", []))
        self._url: str | None = self.options.get("URL")
        self._jobs: JobService | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """The shardq database URL."""
        return self._url or database_url(self.database)

    @property
    def jobs(self) -> JobService:
        """This process's JobService for enqueueing and reading (no runner), started on
        first use on a thread of its own and stopped at exit."""
        with self._lock:
            if self._jobs is None:
                jobs = JobService(self.url, runner=False)
                jobs.__enter__()
                atexit.register(_stop, jobs)
                self._jobs = jobs
            return self._jobs

    def enqueue(self, task: Task[Any, Any], args: Any, kwargs: Any) -> TaskResult[Any]:
        """Store the task's job; inside ``transaction.atomic()`` on the shardq database,
        in Django's own transaction."""
        self.validate_task(task)
        conn = self._atomic_connection()  # first: it refuses to start the service in there
        jobs = self.jobs
        delay = 0.0
        if task.run_after is not None:
            # On the service's clock: the job's due time is its clock's now plus the delay.
            delay = max(0.0, (task.run_after - _now(jobs.clock)).total_seconds())
        job_id = jobs.submit_sync(
            task.module_path,
            {"args": list(args), "kwargs": dict(kwargs)},
            priority=priority_of(task.priority),
            max_attempts=self.max_attempts,
            delay=delay,
            conn=conn,
        )
        assert isinstance(job_id, str)
        now = _now(jobs.clock)
        return _result(task, job_id, TaskResultStatus.READY, args, kwargs, self.alias, now)

    def start(self) -> JobService:
        """Start this process's JobService now (else the first enqueue does). On SQLite it
        must be started before the first enqueue inside a transaction that has written:
        starting takes the database's write lock, which that transaction holds. The
        application does this at the start of each request; call it at start-up elsewhere."""
        return self.jobs

    @property
    def started(self) -> bool:
        """Whether this process's JobService is started."""
        return self._jobs is not None

    def _atomic_connection(self) -> object:
        """Django's DB-API connection when an atomic block is open on the shardq database."""
        if self._url is not None:
            return None
        django_conn = connections[self.database]
        if not django_conn.in_atomic_block:
            return None
        django_conn.ensure_connection()
        raw = django_conn.connection
        if not self.started and getattr(raw, "in_transaction", False):
            raise RuntimeError(
                "the shardq task backend is not started yet, and starting it inside this"
                " transaction would wait for the transaction's own write lock: call"
                " ShardqBackend.start() before the transaction (at start-up)"
            )
        status = getattr(getattr(raw, "info", None), "transaction_status", None)
        if status is not None and int(status) == 0:
            # psycopg begins Django's transaction at its first statement: begin it now.
            with django_conn.cursor() as cursor:
                cursor.execute("SELECT 1")
        return raw

    def get_result(self, result_id: str) -> TaskResult[Any]:
        """The task's result as stored now; ``TaskResultDoesNotExist`` for an unknown id."""
        try:
            st = self.jobs.status_sync(result_id)
        except JobError as e:
            if e.reason in ("NotFound", "Validation"):
                raise TaskResultDoesNotExist(result_id) from None
            raise
        return self.result_of(st)

    def result_of(self, st: JobStatusResponse) -> TaskResult[Any]:
        """A job's status as a ``TaskResult``."""
        job = st.job
        try:
            task = import_string(job.type) if job is not None else None
        except ImportError:
            task = None
        if job is None or not isinstance(task, Task):
            raise TaskResultDoesNotExist(st.id)
        payload = job.payload if isinstance(job.payload, dict) else {}
        starts = [h.timestamp for h in st.history if h.status == "processing"]
        result = _result(
            task,
            st.id,
            _STATUS[st.status],
            payload.get("args", []),
            payload.get("kwargs", {}),
            self.alias,
            st.created_at,
            started=starts[0] if starts else None,
            last=starts[-1] if starts else None,
            finished=st.finished_at,
            attempts=st.attempts,
        )
        if st.status == "complete":
            object.__setattr__(result, "_return_value", st.result)
        elif st.status in ("failed", "cancelled"):
            result.errors.append(_error(st))
        return result


def _now(clock: Clock) -> dt.datetime:
    return dt.datetime.fromtimestamp(clock.now_ms() / 1000, dt.UTC)


def _stop(jobs: JobService) -> None:
    # At exit the thread pools may already refuse work: what cannot be closed then goes with
    # the process.
    with contextlib.suppress(RuntimeError):
        jobs.__exit__(None, None, None)


def _error(st: JobStatusResponse) -> TaskError:
    text = st.error or st.status
    if text.startswith(FAILED_PREFIX):
        path, _, trace = text[len(FAILED_PREFIX) :].partition("\n")
        return TaskError(exception_class_path=path, traceback=trace)
    return TaskError(exception_class_path=f"{JobError.__module__}.JobError", traceback=text)


def _result(
    task: Task[Any, Any],
    job_id: str,
    status: Any,  # a TaskResultStatus
    args: Any,
    kwargs: Any,
    backend: str,
    enqueued: dt.datetime | None,
    *,
    started: dt.datetime | None = None,
    last: dt.datetime | None = None,
    finished: dt.datetime | None = None,
    attempts: int = 0,
) -> TaskResult[Any]:
    return TaskResult(
        task=task,
        id=job_id,
        status=status,
        enqueued_at=enqueued,
        started_at=started,
        last_attempted_at=last,
        finished_at=finished,
        args=list(args),
        kwargs=dict(kwargs),
        backend=backend,
        errors=[],
        # Django counts a result's attempts by its worker ids: one per attempt.
        worker_ids=["shardq"] * attempts,
    )


def context_for(
    task: Task[Any, Any],
    job_id: str,
    attempt: int,
    args: Any,
    kwargs: Any,
    *,
    clock: Clock = SYSTEM_CLOCK,
) -> TaskContext:
    """The ``TaskContext`` of a running job (its ``attempt``-th), for tasks that take one;
    its times are ``clock``'s now (the clock of the service running the job)."""
    now = _now(clock)
    result = _result(
        task, job_id, TaskResultStatus.RUNNING, args, kwargs, task.backend, now,
        started=now, last=now, attempts=attempt,
    )  # fmt: skip
    return TaskContext(task_result=result)

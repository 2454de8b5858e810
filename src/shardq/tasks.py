"""Typed tasks: a function of one typed payload, submitted as a job of a fixed type.

::

    @dataclass
    class Receipt:
        order_id: int
        email: str

    @jobs.task("receipt.send", priority="high", max_attempts=5, timeout=30)
    async def send_receipt(r: Receipt) -> dict[str, str]: ...

    h = await send_receipt.submit(Receipt(1, "a@b.c"), key="order:1")   # JobHandle[dict[str, str]]
    await h.result(timeout=10)                                          # dict[str, str]
    await send_receipt(Receipt(3, "x@y.z"))                             # just runs it

The payload is validated and encoded in the submitting process (a payload that does not fit
the declared type raises ``JobError(reason="Validation")`` and stores nothing), the handler
receives the declared type, and ``JobHandle.result`` decodes the result into the declared
return type. Payload and result types may be dataclasses, TypedDicts, msgspec Structs and
whatever else msgspec supports, or pydantic models when pydantic is installed.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import typing
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypedDict, TypeVar, Unpack, cast, overload

from ._internal.codecs import Codec, codec_for
from ._internal.validation import check_options, show
from .errors import JobError
from .models import Duration, JobPayload, JobStatusResponse, Priority

if TYPE_CHECKING:
    from .jobs import JobService

P = TypeVar("P")
R = TypeVar("R")
T = TypeVar("T")

__all__ = [
    "AsyncTask",
    "JobHandle",
    "SubmitOptions",
    "SyncTask",
    "Task",
    "TaskDecorator",
    "TaskOptions",
    "TaskSupport",
    "add_task_schemas",
    "task_of",
    "task_schemas",
]


class TaskOptions(TypedDict, total=False):
    """The defaults a task gives each of its jobs (each submit may override them)."""

    priority: Priority
    max_attempts: int
    timeout: float | None
    duration: Duration


class SubmitOptions(TypedDict, total=False):
    """The options of one submit of a task, as for ``JobService.submit``."""

    priority: Priority
    dedupe_key: str | None
    max_attempts: int | None
    key: str | None
    timeout: float | None
    delay: float
    duration: Duration
    #: The application's connection whose open transaction the job joins (see
    #: ``JobService.submit_many``).
    conn: object


_SUBMIT_OPTIONS = frozenset(SubmitOptions.__annotations__)
_TASK_OPTIONS = frozenset(TaskOptions.__annotations__)


class JobHandle(Generic[R]):
    """A submitted job of a typed task: its ``id``, and its result once it has one."""

    __slots__ = ("_decode", "_jobs", "id")

    def __init__(self, jobs: JobService, job_id: str, decode: Callable[[object], R]) -> None:
        #: The job's id.
        self.id = job_id
        self._jobs = jobs
        self._decode = decode

    def __repr__(self) -> str:
        return f"JobHandle(id={self.id!r})"

    async def status(self) -> JobStatusResponse:
        """The job's status now (as ``JobService.status``)."""
        return await self._jobs.status(self.id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait until the job finishes and return its handler's value, decoded into the
        task's declared return type.

        Raises ``JobError``: ``Timeout`` if ``timeout`` seconds pass first, ``MaxRetries``
        if it failed after its last attempt (``Processing`` if it failed earlier, from a
        terminal error), ``AlreadyCancelled`` if it was cancelled, ``Validation`` if the
        stored result does not fit the declared type.
        """
        st = await self._jobs.wait(self.id, timeout=timeout)
        if st.status == "complete":
            return self._decode(st.result)
        if st.status == "cancelled":
            raise JobError("AlreadyCancelled", self.id, message=f"job {self.id} was cancelled")
        spent = st.job is not None and st.attempts >= (st.job.max_attempts or 1)
        raise JobError(
            "MaxRetries" if spent else "Processing",
            self.id,
            message=f"job {self.id} failed: {st.error}",
        )


class Task(Generic[P, R]):
    """A job type whose payload is a ``P`` and whose handler returns an ``R``."""

    def __init__(
        self,
        jobs: JobService,
        job_type: str,
        options: TaskOptions,
        payload: Codec[P],
        result: Codec[R],
    ) -> None:
        #: The job type this task submits and handles.
        self.job_type = job_type
        #: The defaults of its jobs.
        self.options = options
        self.payload_codec = payload
        self.result_codec = result
        self._jobs = jobs

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.job_type!r})"

    async def submit(self, payload: P, **options: Unpack[SubmitOptions]) -> JobHandle[R]:
        """Validate and store one job of this task; its handle. Options as for
        ``JobService.submit`` (the task's own are the defaults)."""
        (handle,) = await self._submit([payload], False, options)
        return handle

    async def submit_many(
        self, payloads: Sequence[P], **options: Unpack[SubmitOptions]
    ) -> list[JobHandle[R]]:
        """Store a batch of jobs of this task in one transaction, all or none; with a
        ``dedupe_key``, item ``i`` uses ``f"{dedupe_key}:{i}"``."""
        if not isinstance(payloads, Sequence) or isinstance(payloads, str | bytes):
            raise JobError.from_validation(
                None, f"payloads must be a sequence, got {show(payloads)}"
            )
        return await self._submit(list(payloads), True, options)

    def submit_sync(self, payload: P, **options: Unpack[SubmitOptions]) -> JobHandle[R]:
        """Blocking ``submit``, for synchronous code (see ``with JobService(...)``)."""
        here = options.get("conn") is not None  # a connection is used in its own thread
        return self._jobs._blocking(lambda: self.submit(payload, **options), here)

    def schema(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON Schema of this task's payload and the named schemas it refers to."""
        return self.payload_codec.schema()

    async def _submit(
        self, payloads: list[P], batch: bool, options: SubmitOptions
    ) -> list[JobHandle[R]]:
        unknown = set(options) - _SUBMIT_OPTIONS
        if unknown:
            raise JobError.from_validation(
                None, f"unknown submit option(s) {', '.join(sorted(unknown))}"
            )
        merged: dict[str, Any] = {**self.options, **options}
        attempts = merged.get("max_attempts")
        dedupe = merged.get("dedupe_key")
        batch_id = uuid.uuid4().hex if len(payloads) > 1 else None
        if batch and dedupe is not None and not isinstance(dedupe, str):
            raise JobError.from_validation(None, f"dedupe_key must be a string, got {show(dedupe)}")
        specs = [
            JobPayload(
                type=self.job_type,
                payload=self.payload_codec.encode(p),
                priority=merged.get("priority", "normal"),
                dedupe_key=f"{dedupe}:{i}" if batch and dedupe is not None else dedupe,
                max_attempts=(
                    self._jobs.config.default_max_attempts if attempts is None else attempts
                ),
                duration=merged.get("duration", "short"),
                batch_id=batch_id,
                key=merged.get("key"),
                timeout=merged.get("timeout"),
            )
            for i, p in enumerate(payloads)
        ]
        results = await self._jobs.submit_many(
            specs, delay=merged.get("delay", 0), conn=merged.get("conn")
        )
        return [JobHandle(self._jobs, r.job_id, self.result_codec.decode) for r in results]


class AsyncTask(Task[P, R]):
    """A task of a coroutine function: calling it runs the function (returns its coroutine)."""

    def __init__(
        self,
        jobs: JobService,
        job_type: str,
        options: TaskOptions,
        fn: Callable[[P], Coroutine[Any, Any, R]],
        payload: Codec[P],
        result: Codec[R],
    ) -> None:
        super().__init__(jobs, job_type, options, payload, result)
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, payload: P) -> Coroutine[Any, Any, R]:
        return self.fn(payload)


class SyncTask(Task[P, R]):
    """A task of a plain function (run in the runner's thread pool): calling it runs it."""

    def __init__(
        self,
        jobs: JobService,
        job_type: str,
        options: TaskOptions,
        fn: Callable[[P], R],
        payload: Codec[P],
        result: Codec[R],
    ) -> None:
        super().__init__(jobs, job_type, options, payload, result)
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, payload: P) -> R:
        return self.fn(payload)


#: The attribute of a registered handler that names its task.
_TASK_ATTR = "__shardq_task__"


class TaskDecorator:
    """What ``jobs.task(job_type, **options)`` returns: applied to a function of one
    annotated argument, registers it as the handler of ``job_type`` and returns its task."""

    def __init__(self, jobs: JobService, job_type: str, options: TaskOptions) -> None:
        unknown = set(options) - _TASK_OPTIONS
        if unknown:
            raise JobError.from_validation(
                None, f"unknown task option(s) {', '.join(sorted(unknown))}"
            )
        attempts = options.get("max_attempts", 1)
        check_options(
            JobPayload(
                job_type, None, options.get("priority", "normal"), None, attempts,
                options.get("duration", "short"), None, None, options.get("timeout"),
            )
        )  # fmt: skip
        self._jobs = jobs
        self._type = job_type
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[[P], Coroutine[Any, Any, R]]
    ) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[[P], R]) -> SyncTask[P, R]: ...

    def __call__(self, fn: Callable[[Any], Any]) -> Task[Any, Any]:
        payload_type, result_type = _signature(fn, self._type)
        pc: Codec[Any] = codec_for(payload_type, "payload")
        rc: Codec[Any] = codec_for(result_type, "result")
        task: Task[Any, Any]
        if inspect.iscoroutinefunction(fn):
            task = AsyncTask(self._jobs, self._type, self._options, fn, pc, rc)

            async def handle(data: object) -> object:
                return rc.encode(await fn(pc.decode(data)))

            setattr(handle, _TASK_ATTR, task)
            self._jobs.register_handler(self._type, handle)
        else:
            task = SyncTask(self._jobs, self._type, self._options, fn, pc, rc)

            def handle_sync(data: object) -> object:
                return rc.encode(fn(pc.decode(data)))

            setattr(handle_sync, _TASK_ATTR, task)
            self._jobs.register_handler(self._type, handle_sync)
        return task


def _signature(fn: Callable[..., Any], job_type: str) -> tuple[Any, Any]:
    """The declared payload and result types of a task function."""
    if not callable(fn):
        raise JobError.from_validation(None, f"task {job_type!r}: {show(fn)} is not callable")
    params = [
        p
        for p in inspect.signature(fn).parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if len(params) != 1 or params[0].kind is params[0].KEYWORD_ONLY:
        raise JobError.from_validation(
            None, f"task {job_type!r}: the function must take exactly one (payload) argument"
        )
    try:
        hints = typing.get_type_hints(fn)
    except (NameError, TypeError) as e:
        raise JobError.from_validation(
            None,
            f"task {job_type!r}: its annotations cannot be resolved ({e});"
            " define the types it names at module level",
        ) from None
    name = params[0].name
    if name not in hints:
        raise JobError.from_validation(
            None, f"task {job_type!r}: annotate the payload argument {name!r} with its type"
        )
    return hints[name], hints.get("return", Any)


def task_of(jobs: JobService, job_type: str) -> Task[Any, Any] | None:
    """The typed task that handles ``job_type`` in ``jobs``, if one does."""
    task = getattr(jobs.handlers.get(job_type), _TASK_ATTR, None)
    return task if isinstance(task, Task) else None


def task_schemas(jobs: JobService) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The payload JSON Schema of each typed task of ``jobs`` by job type, and the named
    schemas they refer to (to go under an OpenAPI document's ``components/schemas``, under
    names that start with ``task.``)."""
    by_type: dict[str, dict[str, Any]] = {}
    components: dict[str, Any] = {}
    for job_type, handler in jobs.handlers.items():
        task = getattr(handler, _TASK_ATTR, None)
        if isinstance(task, Task):
            top, named = task.schema()
            by_type[job_type] = top
            components.update({f"task.{k}": v for k, v in named.items()})
    return by_type, components


def add_task_schemas(spec: dict[str, Any], jobs: JobService) -> dict[str, Any]:
    """Put the typed tasks of ``jobs`` into the OpenAPI document ``spec`` and return it: each
    task's payload schema under ``x-shardq-tasks`` (by job type), the named schemas they
    refer to under ``components/schemas`` (``task.<Name>``). Without typed tasks, ``spec``
    is left as it is."""
    by_type, components = task_schemas(jobs)
    if by_type:
        spec.setdefault("components", {}).setdefault("schemas", {}).update(components)
        spec["x-shardq-tasks"] = {t: {"payload": schema} for t, schema in sorted(by_type.items())}
    return spec


class TaskSupport:
    """The typed-task methods of ``JobService``, and the bridge its blocking methods share."""

    def task(self, job_type: str, **options: Unpack[TaskOptions]) -> TaskDecorator:
        """Decorator: make a function of one annotated argument the handler of
        ``job_type`` and return its ``Task`` (``.submit`` gives a ``JobHandle``). ``options``
        (priority, max_attempts, timeout, duration) are the defaults of its jobs."""
        return TaskDecorator(cast("JobService", self), job_type, options)

    def _blocking(self, make: Callable[[], Awaitable[T]], here: bool = False) -> T:
        """The value of the awaitable ``make()`` returns, for synchronous code (as the
        ``*_sync`` methods): run on the service's event loop, or in the calling thread when
        ``here`` (a caller's connection in use must stay in the thread that made it)."""

        async def run() -> T:
            return await make()

        return self._sync(run, here)

    def _sync(self, make: Callable[[], Coroutine[Any, Any, T]], here: bool = False) -> T:
        """See ``_blocking``."""
        jobs = cast("JobService", self)
        loop = jobs._loop
        if loop is None or jobs._driver is None:
            raise JobError.from_runner_unavailable(
                None, "the JobService is not started (use 'with JobService(...) as jobs:')"
            )
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop or (here and running is not None):
            raise RuntimeError("the *_sync methods block; inside the event loop use 'await'")
        if here:
            return asyncio.run(make())
        return asyncio.run_coroutine_threadsafe(make(), loop).result()

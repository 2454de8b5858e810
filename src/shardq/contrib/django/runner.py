"""The worker side: a JobService whose handlers are the Django tasks of a ``ShardqBackend``.

``manage.py shardq worker`` runs ``shardq worker --app shardq.contrib.django.runner:jobs``;
this module's ``jobs`` is built when first read, after Django is set up. The backend alias is
``$SHARDQ_DJANGO_BACKEND`` (``default``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

from django.apps import apps
from django.db import close_old_connections

from ...context import current_job
from ...jobs import JobService
from .backend import ShardqBackend, Task, TaskFailed, context_for

#: The environment variable naming the backend alias the worker serves.
BACKEND_ENV = "SHARDQ_DJANGO_BACKEND"


def backend(alias: str | None = None) -> ShardqBackend:
    """The ``ShardqBackend`` of ``alias`` (by default ``$SHARDQ_DJANGO_BACKEND`` or
    ``default``)."""
    try:
        from django.tasks import task_backends
    except ImportError:
        from django_tasks import task_backends
    found = task_backends[alias or os.environ.get(BACKEND_ENV, "default")]
    if not isinstance(found, ShardqBackend):
        raise ValueError(f"the task backend {found.alias!r} is not a ShardqBackend")
    return found


def tasks(of: ShardqBackend) -> Iterator[Task[Any, Any]]:
    """The tasks of ``of`` in each application's ``tasks`` module and in its ``MODULES``."""
    names = [f"{app.name}.tasks" for app in apps.get_app_configs()]
    seen: set[str] = set()
    for name in [*names, *of.modules]:
        if name in of.modules or importlib.util.find_spec(name) is not None:
            module = importlib.import_module(name)
            for value in vars(module).values():
                ours = isinstance(value, Task) and value.backend == of.alias
                if ours and value.module_path not in seen:
                    seen.add(value.module_path)
                    yield value


def handler(task: Task[Any, Any]) -> Callable[[Any], Any]:
    """Run ``task`` for one job (in a worker thread, with fresh database connections)."""

    def run(payload: Any) -> Any:
        args, kwargs = payload.get("args", []), payload.get("kwargs", {})
        close_old_connections()
        try:
            if task.takes_context:
                job = current_job()
                context = context_for(task, job.job_id, job.attempt, args, kwargs)
                return task.call(context, *args, **kwargs)
            return task.call(*args, **kwargs)
        except Exception as e:
            raise TaskFailed(e) from e
        finally:
            close_old_connections()

    return run


def build(alias: str | None = None) -> JobService:
    """A runner JobService with a handler for every task of the backend."""
    of = backend(alias)
    service = JobService(of.url)
    for task in tasks(of):
        service.register_handler(task.module_path, handler(task))
    return service


def __getattr__(name: str) -> Any:
    if name == "jobs":
        return build()
    raise AttributeError(name)

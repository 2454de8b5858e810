"""The Django application of ``shardq.contrib.django`` (it brings ``manage.py shardq``)."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.core.signals import request_started


class ShardqConfig(AppConfig):
    """``shardq.contrib.django`` as a Django application, labelled ``shardq``: it starts
    the shardq task backends of a web process as its first request begins."""

    name = "shardq.contrib.django"
    label = "shardq"
    verbose_name = "shardq"

    def ready(self) -> None:
        request_started.connect(_start_backends, dispatch_uid="shardq-start-backends")


def _start_backends(**kwargs: Any) -> None:
    """Start every ShardqBackend before a view can open a transaction (once)."""
    from .backend import ShardqBackend

    try:
        from django.tasks import task_backends
    except ImportError:
        from django_tasks import task_backends
    for backend in task_backends.all():
        if isinstance(backend, ShardqBackend) and not backend.started:
            backend.start()
    request_started.disconnect(dispatch_uid="shardq-start-backends")

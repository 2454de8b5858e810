"""Django integration: a backend for Django's Tasks framework, and ``manage.py shardq``.

::

    INSTALLED_APPS = [..., "shardq.contrib.django"]
    TASKS = {"default": {"BACKEND": "shardq.contrib.django.ShardqBackend"}}

Tasks (``@task``-decorated module-level functions, in ``<app>/tasks.py`` or in the modules
listed in ``OPTIONS["MODULES"]``) enqueue into shardq, on the Django database by default
(``OPTIONS["URL"]`` names another); ``manage.py shardq worker`` runs them and
``manage.py shardq serve`` adds the HTTP API and dashboard. Enqueued inside
``transaction.atomic()``, a task joins Django's own transaction: it exists, and runs, only
if that commits. Django's built-in ``django.tasks`` is used where it exists (Django 6), else
the ``django-tasks`` backport.
"""

from __future__ import annotations

from .backend import ShardqBackend

__all__ = ["ShardqBackend"]

"""The Django scenario, run in a process of its own (Django is configured once per process):
prints one JSON object of what it saw. ``python -m tests.apps.djshop.scenario``."""

from __future__ import annotations

import datetime as dt
import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djshop.settings")

import django

django.setup()

from django.db import connection, transaction  # noqa: E402

from shardq.contrib.django.runner import backend, build  # noqa: E402

from .shop.models import Order  # noqa: E402
from .shop.tasks import SENT, attempt, boom, send_receipt  # noqa: E402


class Abort(Exception):
    pass


def main() -> dict[str, object]:
    with connection.schema_editor() as editor:
        editor.create_model(Order)
    shardq = backend()
    out: dict[str, object] = {"url": shardq.url.split(":", 1)[0]}
    if shardq.url.startswith("sqlite:"):
        # Starting it inside a transaction that has written would wait for that transaction.
        with transaction.atomic():
            Order.objects.create(email="first@b.c")
            try:
                send_receipt.enqueue(0)
            except RuntimeError as e:
                out["not started"] = "ShardqBackend.start()" in str(e)
            transaction.set_rollback(True)
        from django.core.signals import request_started

        request_started.send(sender=None)  # what a web process's first request does
        out["started by request"] = shardq.started
    with build() as worker:
        out["handlers"] = sorted(worker.handlers)

        def wait(result_id: str) -> None:
            worker._sync(lambda: worker.wait(result_id, timeout=20))

        with transaction.atomic():
            order = Order.objects.create(email="a@b.c")
            committed = send_receipt.enqueue(order.id)
        wait(committed.id)
        got = send_receipt.get_result(committed.id)
        out["committed"] = [str(got.status), got.return_value, got.attempts]
        try:
            with transaction.atomic():
                order = Order.objects.create(email="x@y.z")
                rolled = send_receipt.enqueue(order.id)
                raise Abort
        except Abort:
            pass
        try:
            send_receipt.get_result(rolled.id)
            out["rolled back"] = "found"
        except Exception as e:
            out["rolled back"] = type(e).__name__
        failed = boom.enqueue(1)
        wait(failed.id)
        got = boom.get_result(failed.id)
        out["failed"] = [str(got.status), got.errors[0].exception_class_path]
        out["failed traceback"] = "ValueError: boom 1" in got.errors[0].traceback
        ctx = attempt.enqueue(5)
        wait(ctx.id)
        out["context"] = attempt.get_result(ctx.id).return_value == [1, ctx.id, 5]
        later = send_receipt.using(run_after=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        deferred = later.enqueue(1)
        out["deferred"] = str(send_receipt.get_result(deferred.id).status)
        status = shardq.jobs.status_sync(failed.id)
        out["priority"] = status.job.priority if status.job else None
        out["sent"] = list(SENT)
        out["orders"] = Order.objects.count()
    return out


if __name__ == "__main__":
    print(json.dumps(main()))

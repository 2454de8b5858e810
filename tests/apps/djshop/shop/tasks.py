"""The shop's tasks: module-level functions decorated with Django's ``@task``."""

from __future__ import annotations

from typing import Any

try:
    from django.tasks import task
except ImportError:
    from django_tasks import task

from .models import Order

#: Order ids whose receipt was sent, in this process.
SENT: list[int] = []


@task()
def send_receipt(order_id: int) -> dict[str, Any]:
    order = Order.objects.get(id=order_id)
    SENT.append(order_id)
    return {"sent": order.email}


@task(priority=60)
def boom(n: int) -> None:
    raise ValueError(f"boom {n}")


@task(takes_context=True)
def attempt(context: Any, n: int) -> list[Any]:
    return [context.attempt, context.task_result.id, n]

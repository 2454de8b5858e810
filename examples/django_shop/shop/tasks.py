"""The shop's tasks, run by ``manage.py shardq worker``."""

from __future__ import annotations

from django.utils import timezone

try:
    from django.tasks import task
except ImportError:  # Django before 6: the django-tasks backport
    from django_tasks import task

from .models import Order


@task()
def send_receipt(order_id: int) -> dict[str, int]:
    """Send the order's receipt (here: mark it receipted); a retry finds it done."""
    updated = Order.objects.filter(id=order_id, receipted_at=None).update(
        receipted_at=timezone.now()
    )
    return {"order_id": order_id, "updated": updated}

"""``POST /orders/`` creates an order and enqueues its receipt in one transaction;
``POST /orders/?fail=1`` fails after both, and the rollback leaves neither."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET, require_POST

from .models import Order
from .tasks import send_receipt


class Failed(Exception):
    """A failure after the insert and the enqueue (``?fail=1``); carries the task result id."""


@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    try:
        body = json.loads(request.body)
        email, total = str(body["email"]), int(body["total_cents"])
    except (ValueError, KeyError, TypeError):
        return JsonResponse({"error": "expected {'email': str, 'total_cents': int}"}, status=400)
    try:
        with transaction.atomic():
            order = Order.objects.create(email=email, total_cents=total)
            # Enqueued on Django's own connection: it commits or rolls back with the order.
            result = send_receipt.enqueue(order.id)
            if request.GET.get("fail"):
                raise Failed(result.id)
    except Failed as e:
        body = {"error": "failed after insert and enqueue; both rolled back", "task": str(e)}
        return JsonResponse(body, status=500)
    return JsonResponse({"order": order.id, "task": result.id}, status=201)


@require_GET
def get_order(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.filter(id=order_id).first()
    if order is None:
        return JsonResponse({"error": "no such order"}, status=404)
    return JsonResponse(
        {"id": order.id, "email": order.email, "receipted": order.receipted_at is not None}
    )

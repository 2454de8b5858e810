"""The shop's own table."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    """An order; ``receipted_at`` is set by the receipt task."""

    email = models.CharField(max_length=200)
    total_cents = models.BigIntegerField()
    receipted_at = models.DateTimeField(null=True)

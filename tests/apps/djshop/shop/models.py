"""The shop's own table."""

from __future__ import annotations

from django.db import models


class Order(models.Model):
    email = models.CharField(max_length=100)

"""The shop's routes."""

from __future__ import annotations

from django.urls import path

from .shop import views

urlpatterns = [
    path("orders/", views.create_order),
    path("orders/<int:order_id>/", views.get_order),
]

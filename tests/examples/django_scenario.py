"""Drives the Django example's views with Django's test client, in a process of its own
(Django is configured once per process); prints one JSON object of the responses.
``python -m tests.examples.django_scenario`` with $SHARDQ_DATABASE_URL set."""

from __future__ import annotations

import json
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "examples.django_shop.settings")

import django

django.setup()

from django.test import Client  # noqa: E402


def main() -> dict[str, object]:
    client = Client()
    order = {"email": "a@b.c", "total_cents": 1250}
    out: dict[str, object] = {}
    for name, path in (("committed", "/orders/"), ("rolled back", "/orders/?fail=1")):
        r = client.post(path, json.dumps(order), content_type="application/json")
        out[name] = {"status": r.status_code, "body": r.json()}
    r = client.post("/orders/", "{}", content_type="application/json")
    out["bad body"] = r.status_code
    return out


if __name__ == "__main__":
    print(json.dumps(main()))

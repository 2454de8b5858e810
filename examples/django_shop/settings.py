"""Settings of the Django shop: PostgreSQL at $SHARDQ_DATABASE_URL, tasks on shardq."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_url = urlsplit(os.environ.get("SHARDQ_DATABASE_URL", "postgresql://postgres@127.0.0.1/shop"))
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": unquote(_url.path.lstrip("/")),
        "USER": unquote(_url.username or ""),
        "PASSWORD": unquote(_url.password or ""),
        "HOST": _url.hostname or "",
        "PORT": str(_url.port or 5432),
    }
}
INSTALLED_APPS = ["examples.django_shop.shop", "shardq.contrib.django"]
# Enqueued tasks go to shardq on the Django database, so they join transaction.atomic().
TASKS = {"default": {"BACKEND": "shardq.contrib.django.ShardqBackend"}}
ROOT_URLCONF = "examples.django_shop.urls"
# A JSON API without sessions or forms: no middleware (and so no CSRF check) is needed.
MIDDLEWARE: list[str] = []
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-only-not-a-secret")
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

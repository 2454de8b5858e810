"""Settings of a small Django project on shardq: the database comes from $DJSHOP_DATABASE
(a ``sqlite:///path`` or ``postgresql://…`` URL)."""

from __future__ import annotations

import os
from urllib.parse import unquote, urlsplit

_url = os.environ["DJSHOP_DATABASE"]
if _url.startswith("sqlite:"):
    DATABASES = {
        "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": _url[len("sqlite:///") :]}
    }
else:
    _parts = urlsplit(_url)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(_parts.path.lstrip("/")),
            "USER": _parts.username or "",
            "HOST": _parts.hostname or "",
            "PORT": str(_parts.port or 5432),
        }
    }
INSTALLED_APPS = ["tests.apps.djshop.shop", "shardq.contrib.django"]
TASKS = {"default": {"BACKEND": "shardq.contrib.django.ShardqBackend"}}
SECRET_KEY = "not-a-secret"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

"""Tests: real PostgreSQL by default (DATABASE_URL overrides), fast hashing."""

from __future__ import annotations

import os

from .base import *  # noqa: F403
from .base import database, env

DATABASES = {"default": database("postgres://postgres@127.0.0.1:5432/spendplane")}
DATABASES["default"]["CONN_MAX_AGE"] = 0
# One test database per test run, so parallel runs (CI beside a developer's
# run, or several checkouts) never drop each other's database.
DATABASES["default"]["TEST"] = {
    "NAME": env.str(
        "TEST_DATABASE_NAME", default=f"test_{DATABASES['default']['NAME']}_{os.getpid()}"
    )
}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
if "EMAIL_URL" not in os.environ:  # a test that starts an SMTP server passes its address
    EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default="redis://127.0.0.1:6379/15")
CELERY_BROKER_TRANSPORT_OPTIONS = {}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Their webhook receivers listen on 127.0.0.1.
WEBHOOK_ALLOW_PRIVATE_ADDRESSES = env.bool("WEBHOOK_ALLOW_PRIVATE_ADDRESSES", default=True)

"""The Celery application. Broker from CELERY_BROKER_URL (settings); tasks are
discovered in every installed app's ``tasks`` module."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.dev")

app = Celery("spendplane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

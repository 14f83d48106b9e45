"""Add the daily purge of ended reservations to the beat schedule (get_or_create
by name, like the default schedule: an admin's edit is never overwritten)."""

from __future__ import annotations

import json

from django.db import migrations

NAME = "Purge ended reservations (daily)"
TASK = "quotas.purge_reservations"


def seed(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    schedule, _ = CrontabSchedule.objects.get_or_create(
        minute="15", hour="4", day_of_week="*", day_of_month="*", month_of_year="*",
        timezone="UTC",
    )
    PeriodicTask.objects.get_or_create(
        name=NAME, defaults={"task": TASK, "crontab": schedule, "kwargs": json.dumps({})}
    )


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0003_reservation_held_index_by_org"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

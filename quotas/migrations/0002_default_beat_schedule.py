"""Seed the default beat schedule. get_or_create by name: admins may edit the
tasks afterwards, and neither a restart nor a later migration overwrites them."""

from __future__ import annotations

import json

from django.db import migrations

INTERVALS = [
    # (name, task, every, period)
    ("Evaluate budget thresholds", "quotas.evaluate_thresholds", 5, "minutes"),
    ("Send pending notifications", "quotas.send_notifications", 1, "minutes"),
    ("Expire stale reservations", "quotas.expire_reservations", 1, "minutes"),
    ("Open current budget periods", "quotas.open_periods", 15, "minutes"),
    ("Reconcile counters against the ledger", "quotas.reconcile_counters", 1, "hours"),
    ("Daily spend summaries (08:00 local per organization)", "costs.daily_summaries", 15, "minutes"),
    ("Spend spike detection", "costs.spend_spikes", 1, "hours"),
    ("Unpriced usage alerts", "costs.unpriced_usage", 1, "hours"),
    ("Reprice unpriced usage", "costs.reprice", 1, "hours"),
]
CRONTABS = [
    # (name, task, minute, hour, day_of_week)
    ("Sync the price catalog (weekly)", "costs.sync_prices", "30", "3", "1"),
]


def seed(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    for name, task, every, period in INTERVALS:
        schedule, _ = IntervalSchedule.objects.get_or_create(every=every, period=period)
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "interval": schedule, "kwargs": json.dumps({})}
        )
    for name, task, minute, hour, dow in CRONTABS:
        schedule, _ = CrontabSchedule.objects.get_or_create(
            minute=minute, hour=hour, day_of_week=dow, day_of_month="*", month_of_year="*",
            timezone="UTC",
        )
        PeriodicTask.objects.get_or_create(
            name=name, defaults={"task": task, "crontab": schedule, "kwargs": json.dumps({})}
        )


class Migration(migrations.Migration):
    dependencies = [
        ("quotas", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(seed, migrations.RunPython.noop)]

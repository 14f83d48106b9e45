"""Alerts through the API and the admin, and the seeded beat schedule.

Tenant A (acme): alice owner, bob member. Tenant B (globex): charlie owner.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.apps import apps as django_apps
from django.test import Client
from django_celery_beat.models import IntervalSchedule, PeriodicTask

import quotas.migrations
from quotas.alerts import AlertSpec, alert_raise
from quotas.models import Alert
from tests.factories import make_key

pytestmark = pytest.mark.django_db

ALERTS = "/api/v1/alerts"
ADMIN_ALERTS = "/admin/quotas/alert/"
T0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def raise_alert(org, key: str, title: str, at: datetime) -> Alert:
    with time_machine.travel(at, tick=False):
        alert = alert_raise(
            org=org,
            spec=AlertSpec(
                kind=Alert.Kind.SPEND_SPIKE,
                dedup_key=key,
                title=title,
                message=f"{title}.",
                severity=Alert.Severity.WARNING,
            ),
        )
    assert alert is not None
    return alert


@pytest.fixture
def alerts(tenant_a, tenant_b):
    """Three alerts of tenant A an hour apart (oldest first) and one of tenant B,
    newer than all of them."""
    own = [
        raise_alert(tenant_a.org, f"acme-{i}", f"Acme alert {i}", T0 + timedelta(hours=i))
        for i in range(3)
    ]
    other = raise_alert(tenant_b.org, "globex-0", "Globex alert", T0 + timedelta(hours=5))
    return own, other


@pytest.fixture
def read_only(tenant_a):
    _, secret = make_key(tenant_a.org, scopes="read", name="read only")
    return tenant_a.client(secret)


def ids(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["id"] for row in response.json()["results"]]


# -- API -------------------------------------------------------------------------------


def test_list_shows_own_alerts_newest_first(api_a, alerts):
    own, other = alerts
    assert ids(api_a.get(ALERTS)) == [str(a.pk) for a in reversed(own)]
    row = api_a.get(ALERTS).json()["results"][0]
    assert row["title"] == "Acme alert 2"
    assert row["kind"] == "spend_spike"
    assert row["read_at"] is None


def test_unread_filter_lists_only_unread_alerts(api_a, alerts):
    own, _ = alerts
    assert api_a.post(f"{ALERTS}/{own[1].pk}/read").status_code == 200

    assert ids(api_a.get(ALERTS, {"unread": "1"})) == [str(own[2].pk), str(own[0].pk)]
    assert ids(api_a.get(ALERTS, {"unread": "0"})) == [str(a.pk) for a in reversed(own)]


def test_listing_alerts_needs_the_manage_scope_as_the_contract_says(read_only, alerts):
    denied = read_only.get(ALERTS)
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    # The dashboard, a read, still tells how many are unread.
    dashboard = read_only.get("/api/v1/dashboard")
    assert dashboard.status_code == 200
    assert dashboard.json()["alerts"]["unread"] == 3


def test_read_marks_read_at_with_manage_scope_and_is_403_with_read_scope(api_a, read_only, alerts):
    own, _ = alerts
    target = own[0]

    denied = read_only.post(f"{ALERTS}/{target.pk}/read")
    assert denied.status_code == 403
    assert denied.json()["error"] == "forbidden"
    target.refresh_from_db()
    assert target.read_at is None

    response = api_a.post(f"{ALERTS}/{target.pk}/read")
    assert response.status_code == 200
    assert response.json()["read_at"] is not None
    target.refresh_from_db()
    assert target.read_at is not None
    assert target.resolved_at is None
    assert Alert.objects.filter(organization=target.organization, read_at__isnull=True).count() == 2


def test_resolve_marks_resolved_at_with_manage_scope_and_is_403_with_read_scope(
    api_a, read_only, alerts
):
    own, _ = alerts
    target = own[2]

    assert read_only.post(f"{ALERTS}/{target.pk}/resolve").status_code == 403
    target.refresh_from_db()
    assert target.resolved_at is None

    response = api_a.post(f"{ALERTS}/{target.pk}/resolve")
    assert response.status_code == 200
    assert response.json()["resolved_at"] is not None
    target.refresh_from_db()
    assert target.resolved_at is not None
    assert target.read_at is not None  # a resolved alert has been read
    assert Alert.objects.filter(resolved_at__isnull=False).count() == 1


def test_read_all_marks_every_unread_alert_of_the_tenant_and_returns_the_count(
    api_a, read_only, alerts
):
    own, other = alerts
    api_a.post(f"{ALERTS}/{own[0].pk}/read")

    assert read_only.post(f"{ALERTS}/read-all").status_code == 403
    assert Alert.objects.filter(pk__in=[a.pk for a in own], read_at__isnull=True).count() == 2

    response = api_a.post(f"{ALERTS}/read-all")
    assert response.status_code == 200
    assert response.json() == {"marked": 2}
    assert not Alert.objects.filter(pk__in=[a.pk for a in own], read_at__isnull=True).exists()
    other.refresh_from_db()
    assert other.read_at is None  # tenant B's alert is not touched
    assert api_a.post(f"{ALERTS}/read-all").json() == {"marked": 0}
    assert ids(api_a.get(ALERTS, {"unread": "1"})) == []


@pytest.mark.parametrize("action", ["read", "resolve"])
def test_another_tenants_alert_is_404_and_stays_unchanged(api_a, alerts, action):
    own, other = alerts
    response = api_a.post(f"{ALERTS}/{other.pk}/{action}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "Globex" not in response.content.decode()
    other.refresh_from_db()
    assert other.read_at is None
    assert other.resolved_at is None
    assert str(other.pk) not in ids(api_a.get(ALERTS))


def test_other_tenant_lists_only_its_own_alert(tenant_b, alerts):
    _, other = alerts
    assert ids(tenant_b.client().get(ALERTS)) == [str(other.pk)]


# -- admin -----------------------------------------------------------------------------


def unread_in_header(client: Client, path: str = ADMIN_ALERTS) -> int:
    response = client.get(path)
    assert response.status_code == 200
    match = re.search(
        r'id="unread-alerts".*?<span data-unread-count>\s*(\d+)\s*</span>',
        response.content.decode(),
        re.S,
    )
    assert match, "no unread-alerts element in the admin header"
    return int(match.group(1))


def login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_admin_header_shows_unread_count_that_drops_after_mark_read(alice, alerts):
    own, _ = alerts
    client = login(alice)
    assert unread_in_header(client) == 3
    assert unread_in_header(client, "/admin/") == 3

    response = client.post(
        ADMIN_ALERTS,
        {"action": "mark_read", "_selected_action": [str(own[0].pk), str(own[2].pk)]},
        follow=True,
    )
    assert response.status_code == 200
    assert "Marked 2 alert(s) read." in response.content.decode()
    assert unread_in_header(client) == 1
    assert set(Alert.objects.filter(read_at__isnull=True).values_list("pk", flat=True)) == {
        own[1].pk,
        alerts[1].pk,
    }


def test_member_mark_read_action_changes_nothing(bob, alerts):
    own, _ = alerts
    client = login(bob)
    assert unread_in_header(client) == 3  # members see their organization's alerts
    client.post(ADMIN_ALERTS, {"action": "mark_read", "_selected_action": [str(own[0].pk)]})
    own[0].refresh_from_db()
    assert own[0].read_at is None
    assert unread_in_header(client) == 3


def test_admin_header_of_other_tenant_counts_only_its_own_alerts(charlie, alice, alerts):
    client = login(charlie)
    assert unread_in_header(client) == 1
    page = client.get(ADMIN_ALERTS).content.decode()
    assert "Globex alert" in page
    assert "Acme alert" not in page


# -- beat schedule ---------------------------------------------------------------------

SCHEDULED_TASKS = {
    "quotas.evaluate_thresholds",
    "quotas.send_notifications",
    "quotas.expire_reservations",
    "quotas.purge_reservations",
    "quotas.open_periods",
    "quotas.reconcile_counters",
    "costs.daily_summaries",
    "costs.spend_spikes",
    "costs.unpriced_usage",
    "costs.reprice",
    "costs.sync_prices",
}


def beat_migration():
    (name,) = [
        m.name
        for m in pkgutil.iter_modules(quotas.migrations.__path__)
        if m.name.endswith("default_beat_schedule")
    ]
    return importlib.import_module(f"quotas.migrations.{name}")


def test_beat_schedule_is_seeded_with_tasks_the_celery_app_registers():
    from config.celery import app

    app.loader.import_default_modules()  # runs autodiscovery, as a worker does
    registered = set(app.tasks)

    tasks = list(PeriodicTask.objects.values_list("task", flat=True))
    assert set(tasks) == SCHEDULED_TASKS
    assert len(tasks) == len(set(tasks))
    assert set(tasks) <= registered, set(tasks) - registered
    # 08:00 local in every time zone is hit only if the summary runs every quarter hour.
    summaries = PeriodicTask.objects.get(task="costs.daily_summaries")
    assert (summaries.interval.every, summaries.interval.period) == (15, "minutes")
    for task in PeriodicTask.objects.filter(crontab__isnull=False):
        assert task.crontab.timezone is not None
        assert str(task.crontab.timezone) == "UTC"


def test_reseeding_the_beat_schedule_keeps_an_admins_edit_and_adds_nothing():
    task = PeriodicTask.objects.get(task="quotas.send_notifications")
    every_ten, _ = IntervalSchedule.objects.get_or_create(every=10, period="minutes")
    task.interval = every_ten
    task.enabled = False
    task.save()
    before = sorted(PeriodicTask.objects.values_list("name", "task"))

    beat_migration().seed(django_apps, None)

    assert sorted(PeriodicTask.objects.values_list("name", "task")) == before
    task.refresh_from_db()
    assert (task.interval.every, task.interval.period) == (10, "minutes")
    assert task.enabled is False

"""The beat schedule's admin pages refuse, field by field, what beat could not run."""

from __future__ import annotations

import pytest
from django.test import Client
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tests.admin_forms import read_form
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def root() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root@example.com", is_superuser=True))
    return client


def _form(client: Client, url: str, model) -> dict:
    return read_form(client.get(url).content.decode(), model).data


@pytest.mark.parametrize("part", ["minute", "hour", "day_of_week", "day_of_month"])
def test_a_crontab_part_celery_cannot_parse_is_that_parts_error(root, part):
    schedule = CrontabSchedule.objects.create(minute="30", hour="3")
    url = f"/admin/django_celery_beat/crontabschedule/{schedule.pk}/change/"
    response = root.post(url, {**_form(root, url, CrontabSchedule), part: "-1"})
    assert response.status_code == 200
    assert part in response.context["adminform"].form.errors
    schedule.refresh_from_db()
    assert (schedule.minute, schedule.hour) == ("30", "3")


def test_a_crontab_posted_with_any_shown_zone_compares_with_its_own(root):
    schedule = CrontabSchedule.objects.create(minute="30", hour="3")
    url = f"/admin/django_celery_beat/crontabschedule/{schedule.pk}/change/"
    response = root.post(url, {**_form(root, url, CrontabSchedule), "initial-timezone": "x" * 300})
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("field", "value"), [("task", "x" * 201), ("task", "a\x00b"), ("regtask", "a\x00b")]
)
def test_a_task_name_no_task_could_have_is_a_form_error(root, field, value):
    task = PeriodicTask.objects.get(task="quotas.reconcile_counters")  # seeded by a migration
    url = f"/admin/django_celery_beat/periodictask/{task.pk}/change/"
    response = root.post(url, {**_form(root, url, PeriodicTask), "regtask": "", field: value})
    assert response.status_code == 200
    assert field in response.context["adminform"].form.errors
    task.refresh_from_db()
    assert task.task == "quotas.reconcile_counters"

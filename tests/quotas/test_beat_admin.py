"""The beat schedule's admin pages refuse, field by field, what beat could not run."""

from __future__ import annotations

import pytest
from django.test import Client
from django_celery_beat.models import CrontabSchedule, PeriodicTask

from tests.admin_forms import post_form, read_form
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


# -- a periodic task's arguments and headers, as beat reads and uses them ----------


@pytest.fixture
def reconcile() -> PeriodicTask:
    return PeriodicTask.objects.get(task="quotas.reconcile_counters")  # seeded by a migration


def _change(client: Client, row: PeriodicTask, /, **changes: str):
    url = f"/admin/django_celery_beat/periodictask/{row.pk}/change/"
    return post_form(client, url, PeriodicTask, **changes)


def _errors(response, field: str) -> str:
    assert response.status_code == 200
    return " ".join(response.context["adminform"].form.errors.get(field, []))


def _stored(task: PeriodicTask) -> tuple[str, str, str, str]:
    task.refresh_from_db()
    return task.task, task.args, task.kwargs, task.headers


def _assert_refused(client: Client, row: PeriodicTask, field: str, said: str, **changes: str):
    before = _stored(row)
    response = _change(client, row, **changes)
    assert said in _errors(response, field)
    assert _stored(row) == before


NOT_JSON = "cannot read this as JSON"


@pytest.mark.parametrize(
    ("field", "value", "said"),
    [
        ("args", "-1", "JSON array"),
        ("args", "{}", "JSON array"),
        ("args", '"x"', "JSON array"),
        ("args", "null", "JSON array"),
        ("kwargs", "-1", "JSON object"),
        ("kwargs", "[]", "JSON object"),
        ("kwargs", "null", "JSON object"),
        ("headers", "-1", "JSON object"),
        ("headers", "[]", "JSON object"),
        ("headers", "{", NOT_JSON),
        ("headers", "x" * 301, NOT_JSON),
        # What Python's parser takes and JSON has not.
        ("args", "[NaN]", NOT_JSON),
        ("kwargs", '{"org_id": Infinity}', NOT_JSON),
        ("headers", '{"a": 1e400}', NOT_JSON),
        ("args", "[1e999999999999999999]", NOT_JSON),
        ("kwargs", '{"org_id": 1E+99999999999999999999999999}', NOT_JSON),
        # JSON that kombu's decoding, which beat reads with, fails on.
        ("args", '[{"__type__": "bytes", "__value__": 5}]', NOT_JSON),
        ("kwargs", '{"org_id": {"__type__": "decimal", "__value__": "x"}}', NOT_JSON),
        ("args", "[" * 100_000 + "]" * 100_000, NOT_JSON),
    ],
)
def test_json_beat_cannot_use_is_that_fields_error(root, reconcile, field, value, said):
    _assert_refused(root, reconcile, field, said, **{field: value})


@pytest.mark.parametrize(
    ("changes", "field", "said"),
    [
        ({"args": "[1, 2, 3]"}, "args", "too many positional arguments"),
        ({"kwargs": '{"org": "a"}'}, "kwargs", "unexpected keyword argument 'org'"),
        ({"args": '["a"]', "kwargs": '{"org_id": "b"}'}, "kwargs", "multiple values"),
        # The task chosen from the registered ones, which takes none.
        ({"regtask": "quotas.send_notifications", "args": '["a"]'}, "args", "too many"),
    ],
)
def test_arguments_the_task_cannot_take_are_that_fields_error(
    root, reconcile, changes, field, said
):
    _assert_refused(root, reconcile, field, said, **changes)


def test_arguments_are_bound_to_the_task_when_this_process_knows_it(root, reconcile):
    # A task only a worker knows is not checked: this process cannot.
    response = _change(root, reconcile, task="elsewhere.rebuild", args="[1, 2, 3]")
    assert response.status_code == 302
    assert _stored(reconcile)[:2] == ("elsewhere.rebuild", "[1, 2, 3]")

    response = _change(root, reconcile, task="quotas.reconcile_counters")
    assert "too many positional arguments" in _errors(response, "args")
    assert _stored(reconcile)[0] == "elsewhere.rebuild"

    response = _change(root, reconcile, task="quotas.reconcile_counters", args='["a"]')
    assert response.status_code == 302
    assert _stored(reconcile)[:2] == ("quotas.reconcile_counters", '["a"]')


@pytest.mark.parametrize(("field", "empty"), [("args", "[]"), ("kwargs", "{}"), ("headers", "{}")])
def test_a_blank_json_field_is_saved_as_the_empty_value_beat_reads_it_as(
    root, reconcile, field, empty
):
    PeriodicTask.objects.filter(pk=reconcile.pk).update(
        args='["a"]', kwargs='{"budget_ids": []}', headers='{"origin": "admin"}'
    )
    response = _change(root, reconcile, **{field: "  "})
    assert response.status_code == 302
    assert getattr(PeriodicTask.objects.get(pk=reconcile.pk), field) == empty

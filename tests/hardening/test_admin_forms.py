"""Every admin add and change form, as a superuser and as a tenant's owner,
posted with nonsense in one field at a time and the rest as the page rendered
them: never a server error, and no row left pointing at another tenant's.

The owner is charlie (tenant B). Tenant A is the other tenant: its objects'
ids go into the relation fields, and for the owner none of its rows may
change. Each field gets the nonsense its kind of field could mishandle (a
number's overflow, a date's impossible day, JSON's NaN, another tenant's id);
a form's own field, which no model field describes, gets all of it. An add
form is posted on top of the change form's values, so that the nonsense
reaches the save path rather than stopping at an empty required field.

For time (the suite runs it on every change) the values are a few per kind of
field, fields declared alike are swept once, and the add form skips what the
change form's same field refused."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from typing import Any

import pytest
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.db import models
from django.db.models import F
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import (
    ClockedSchedule,
    CrontabSchedule,
    IntervalSchedule,
    PeriodicTask,
    SolarSchedule,
)

from costs.models import AIModel, Provider
from profiles.models import Membership, Organization, Profile
from quotas.models import Budget, BudgetPeriod
from tests.admin_forms import FormReader, read_form
from tests.factories import UserFactory
from tests.isolation import ADMIN_OBJECT_MAKERS

pytestmark = pytest.mark.django_db

OTHER = object()  # stands for the other tenant's object of the related model
JSON_NUL = '["a\\u0000b"]'  # JSON that parses, holding a NUL that jsonb refuses
NONSENSE: dict[str, list[Any]] = {
    "text": ["-1", "x" * 301, "a\x00b"],  # "-1": text that holds a number (a cron part)
    "choice": ["x" * 301],
    "number": ["-1", "99999999999999999999999", "1e400", "NaN"],
    "date": ["2026-13-45", "99999999999999999999999"],
    "json": ["-1", "1e400", "NaN", JSON_NUL],
    "bool": ["abc"],
    "relation": ["abc", "99999999999999999999999", OTHER],
    # Not a huge count: the tenant inlines cap it at their rows and 100 more
    # (test_admin_form_counts.py); the operators' price rows at Django's 2,000.
    "count": ["-1", "NaN"],
}
# For an input no model field describes (a form's own field).
EVERYTHING = ["abc", "-1", "99999999999999999999999", "1e400", "NaN", "2026-13-45"]
EVERYTHING += ["x" * 301, "a\x00b", JSON_NUL]
# "memberships-0-role": a field of an inline's form; "effective_from_0": a part
# of a split widget; "initial-tiers": the value a field was shown with.
_INPUT = re.compile(r"^(?:initial-)?(?:(?P<prefix>.+)-\d+-)?(?P<field>\w+?)(?P<part>_[01])?$")
# A formset's management form: Django acts on the two counts, and only parses the rest.
_COUNTS = ("-TOTAL_FORMS", "-INITIAL_FORMS")
_UNREAD = ("-MIN_NUM_FORMS", "-MAX_NUM_FORMS")


def model_field(model_admin: admin.ModelAdmin, name: str) -> models.Field | None:
    """The model field behind a form input of the admin or of one of its inlines."""
    match = _INPUT.match(name)
    if match is None:
        return None
    if match["prefix"]:
        candidates = [inline.model for inline in model_admin.inlines]
    else:
        candidates = [model_admin.model]
    for model in candidates:
        try:
            field = model._meta.get_field(match["field"])
        except Exception:  # noqa: BLE001 - not a field of this model
            continue
        if isinstance(field, models.Field):
            return field
    return None


def kind_of(field: models.Field | None) -> str | None:
    if field is None:
        return None
    if field.is_relation or field.primary_key:
        return "relation"
    if isinstance(field, models.BooleanField):
        return "bool"
    if isinstance(field, models.JSONField):
        return "json"
    if isinstance(field, models.DateField | models.TimeField | models.DurationField):
        return "date"
    if isinstance(field, models.IntegerField | models.DecimalField | models.FloatField):
        return "number"
    if field.choices:
        return "choice"
    return "text"


def declared_alike(model_admin: admin.ModelAdmin, name: str) -> object:
    """Inputs of fields declared alike (Price's ten rates) are validated alike:
    the sweep posts the first of them."""
    field = model_field(model_admin, name)
    match = _INPUT.match(name)
    if field is None or match is None:
        return name
    _, path, args, kwargs = field.deconstruct()
    kwargs = {k: v for k, v in kwargs.items() if k not in {"help_text", "verbose_name"}}
    return (
        match["prefix"],
        match["part"],
        name.startswith("initial-"),
        path,
        repr(args),
        repr(sorted(kwargs.items())),
    )


def nonsense_for(model_admin: admin.ModelAdmin, name: str, other: dict) -> Iterator[str]:
    field = model_field(model_admin, name)
    kind = "count" if name.endswith(_COUNTS) else kind_of(field)
    for value in NONSENSE.get(kind or "", EVERYTHING):
        if value is not OTHER:
            yield value
            continue
        assert field is not None
        target = field.related_model if field.is_relation else field.model
        if target in other:
            yield str(other[target].pk)


# -- what the sweep compares --------------------------------------------------------


def _swept_models() -> list[type[models.Model]]:
    apps_ = [apps.get_app_config(label) for label in ("profiles", "quotas", "costs")]
    return [*(m for app in apps_ for m in app.get_models()), User, Group]


# Kept by the database's triggers: any price written, even one tenant's own,
# moves every organization's (costs/migrations/0003).
_KEPT_BY_TRIGGERS = {"updated_at", "setup_version"}


def snapshot() -> dict[type[models.Model], dict[Any, dict[str, Any]]]:
    return {
        model: {
            row["pk"]: row
            for row in model._default_manager.values(
                "pk",
                *(
                    f.attname
                    for f in model._meta.concrete_fields
                    if f.attname not in _KEPT_BY_TRIGGERS
                ),
            )
        }
        for model in _swept_models()
    }


def written(before: dict, after: dict) -> Iterator[tuple[type[models.Model], str, dict]]:
    for model, rows in after.items():
        for pk, row in rows.items():
            if before[model].get(pk) != row:
                yield model, "added" if pk not in before[model] else "changed", row
        for pk, row in before[model].items():
            if pk not in rows:
                yield model, "deleted", row


def org_path(model: type[models.Model], depth: int = 2) -> str | None:
    """The lookup from a model to the organization its rows belong to
    ("budget__organization" for a budget's period), if any."""
    if model is Organization:
        return "pk"
    fields = [f for f in model._meta.concrete_fields if f.is_relation and f.related_model]
    if any(f.name == "organization" for f in fields):
        return "organization"
    for field in fields if depth else ():
        inner = org_path(field.related_model, depth - 1)  # type: ignore[arg-type]
        if inner is not None:
            return f"{field.name}__{inner}"
    return None


def organizations(model: type[models.Model], row: dict[str, Any]) -> set[Any]:
    """The organizations of a row and of each row it points to."""
    found = {row["pk"]} if model is Organization else set()
    for field in model._meta.concrete_fields:
        target, value = field.related_model, row.get(field.attname)
        path = org_path(target) if target is not None else None
        if value is not None and path is not None:
            rows = target._default_manager.filter(pk=value)  # type: ignore[union-attr]
            found.add(rows.values_list(path, flat=True).first())
    found.discard(None)
    return found


def ties() -> list[str]:
    """Rows of one organization that point to a row of another (a profile's
    events once the profile moved, a budget's holds once the budget moved)."""
    found: list[str] = []
    for model in _swept_models():
        own = org_path(model)
        if own is None or model is Organization:
            continue
        for field in model._meta.concrete_fields:
            theirs = org_path(field.related_model) if field.related_model else None
            if theirs is None:
                continue
            theirs = f"{field.name}__{theirs}"
            rows = model._default_manager.filter(
                **{f"{own}__isnull": False, f"{theirs}__isnull": False}
            ).exclude(**{own: F(theirs)})
            found += [
                f"{model.__name__} {pk}: its {field.name} is another tenant's"
                for pk in rows.values_list("pk", flat=True)
            ]
    return found


# -- the objects the forms are opened on ----------------------------------------------


def global_objects() -> dict[type[models.Model], models.Model]:
    """A row of each model no tenant owns, so its change form opens."""
    # The task's schedule is not the one whose page is swept: the task's own
    # page sweeps its fields, not each schedule's list of its tasks.
    every = IntervalSchedule.objects.create(every=7, period=IntervalSchedule.MINUTES)
    provider = Provider.objects.create(slug="sweep", name="Sweep")
    return {
        Provider: provider,
        AIModel: AIModel.objects.create(provider=provider, slug="sweep-model"),
        User: UserFactory(username="someone@example.com"),
        Group: Group.objects.create(name="operators"),
        IntervalSchedule: IntervalSchedule.objects.create(every=5, period=IntervalSchedule.SECONDS),
        CrontabSchedule: CrontabSchedule.objects.create(minute="5", hour="4"),
        SolarSchedule: SolarSchedule.objects.create(
            event="sunrise", latitude="48.85", longitude="2.35"
        ),
        ClockedSchedule: ClockedSchedule.objects.create(clocked_time=timezone.now()),
        PeriodicTask: PeriodicTask.objects.create(
            name="sweep task", task="quotas.tasks.reconcile_counters", interval=every
        ),
    }


def objects_of(tenant: Any) -> dict[type[models.Model], models.Model]:
    made = {model: make(tenant) for model, make in ADMIN_OBJECT_MAKERS.items()}
    made[Profile] = tenant.profile  # the one with usage recorded against it
    made[BudgetPeriod] = BudgetPeriod.objects.filter(budget=made[Budget]).first()
    made[User] = made[Membership].user
    return made


def unique_text(model: type[models.Model]) -> set[str]:
    """Text fields an added row must not repeat (a slug, a name, an external id)."""
    names = {f.name for f in model._meta.fields if f.unique and not f.primary_key}
    for constraint in model._meta.constraints:
        names.update(getattr(constraint, "fields", ()))
    return {n for n in names if kind_of(model._meta.get_field(n)) == "text"}


def _shown(value: str) -> str:
    return repr(value if len(value) < 40 else f"{value[:10]}...({len(value)} chars)")


@dataclasses.dataclass
class Sweep:
    client: Client
    other: dict[type[models.Model], models.Model]
    forms: int = 0
    posts: int = 0
    failures: list[str] = dataclasses.field(default_factory=list)

    @property
    def other_ids(self) -> set[str]:
        return {str(obj.pk) for obj in self.other.values()}

    def admin(self, model_admin: admin.ModelAdmin, own: models.Model | None) -> None:
        """The admin's change form for ``own``, then its add form on top of the
        values the change form was shown with. A field of both validates alike:
        what the change form refused in it, the add form is not posted again."""
        meta = model_admin.model._meta
        shown: dict[str, list[str]] = {}
        refused: set[tuple[str, str]] = set()
        if own is not None:
            # First: a row the add form creates might collide with it.
            url = reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[own.pk])
            form = self.form(model_admin, url)
            if form is not None:
                shown = form.data
                refused = self.post_nonsense(model_admin, url, form.names, form.data)
        url = reverse(f"admin:{meta.app_label}_{meta.model_name}_add")
        form = self.form(model_admin, url)
        if form is not None:
            baseline = {**form.data, **{n: v for n, v in shown.items() if n in form.names}}
            renamed = unique_text(model_admin.model) & set(baseline)
            self.post_nonsense(model_admin, url, form.names, baseline, renamed, refused)

    def form(self, model_admin: admin.ModelAdmin, url: str) -> FormReader | None:
        page = self.client.get(url)
        if page.status_code != 200 or 'name="_save"' not in page.content.decode():
            return None  # not this user's to add or change
        self.forms += 1
        return read_form(page.content.decode(), model_admin.model)

    def post_nonsense(
        self,
        model_admin: admin.ModelAdmin,
        url: str,
        names: list[str],
        baseline: dict[str, list[str]],
        renamed: frozenset[str] | set[str] = frozenset(),
        skipped: set[tuple[str, str]] | None = None,
    ) -> set[tuple[str, str]]:
        """Post each nonsense value of each field but ``skipped``; return those
        the form refused (shown again, with its errors)."""
        refused: set[tuple[str, str]] = set()
        swept: set[object] = set()
        for name in names:
            alike = declared_alike(model_admin, name)
            # Any value in a DELETE box asks to delete the inline's row: a
            # request the page offers, and one that could lock the owner out.
            skip = name.endswith(("-DELETE", *_UNREAD)) or "__prefix__" in name
            if skip or name == "csrfmiddlewaretoken" or alike in swept:
                continue
            swept.add(alike)
            for value in nonsense_for(model_admin, name, self.other):
                if (name, value) in (skipped or ()):
                    continue
                self.posts += 1
                data = {**baseline, "_save": ["Save"]}
                data.update({n: [f"{data[n][0]}-{self.posts}"] for n in renamed})
                data[name] = [value]
                status = self.client.post(url, data).status_code
                if status == 200:
                    refused.add((name, value))
                elif status >= 500:
                    self.failures.append(f"{url} {name}={_shown(value)}: {status}")
                elif value in self.other_ids:
                    # Checked at once: the next post puts the field back.
                    self.failures += [f"{url} {name}=<other's>: {tie}" for tie in ties()]
        return refused


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_every_admin_form_answers_nonsense_in_any_field_without_a_server_error(
    tenant_a, tenant_b, charlie, who
):
    other = objects_of(tenant_a)
    own = {**global_objects(), **objects_of(tenant_b)}
    client = Client(raise_request_exception=False)
    client.force_login(
        UserFactory(username="root@example.com", is_superuser=True)
        if who == "superuser"
        else charlie
    )
    before = snapshot()
    sweep = Sweep(client, other)
    for model, model_admin in admin.site._registry.items():
        sweep.admin(model_admin, own.get(model))
    leaks = ties()  # nor left by a row the sweep added
    if who == "owner":
        leaks += [
            f"{what} {model.__name__} {row['pk']} of the other tenant"
            for model, what, row in written(before, snapshot())
            if tenant_a.org.pk in organizations(model, row)
        ]
    # The pages were reached (a broken login would sweep nothing and pass).
    assert sweep.forms >= (30 if who == "superuser" else 12), sweep.forms
    assert not sweep.failures and not leaks, "\n".join([*sweep.failures, *leaks])

"""The ledger's references to its parents (organization, profile, key, model,
price), checked by statement rather than by foreign key constraint
(costs/migrations/0004): no row may name a parent that is not there, whether
the row or the parent goes first, and whoever deletes a parent locks it
before what it takes with it, so nothing deadlocks with usage being recorded."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from costs.models import AIModel, Price, UsageEvent
from costs.services import EventInput, usage_record
from costs.services.ledger import LEDGER_COLUMNS, ledger_insert
from costs.services.profiles import profiles_delete
from profiles.models import ApiKey, Profile
from profiles.services import profile_vanished
from quotas.models import BudgetPeriod
from quotas.services import budget_create
from tests.costs.test_ingest import ledger_grouped, rollups_grouped
from tests.quotas.helpers import InBackground, priced_call

pytestmark = pytest.mark.django_db(transaction=True)

AT = datetime(2026, 11, 20, 10, tzinfo=UTC)
PARENTS = {
    "organization_id": "profiles_organization",
    "profile_id": "profiles_profile",
    "api_key_id": "profiles_apikey",
    "ai_model_id": "costs_aimodel",
    "price_id": "costs_price",
}


def _recorded(tenant, key: str = "seed", profile: str | None = "alice-app-user") -> UsageEvent:
    """A ledger row naming all five parents (a catalog model and its price)."""
    event = EventInput(idempotency_key=key, request_hash=f"h-{key}", provider="openai",
                       model="gpt-4o", operation="chat", occurred_at=AT, profile=profile,
                       usage={"input_tokens": 10, "output_tokens": 5})  # fmt: skip
    [result] = usage_record(org=tenant.org, events=[event], api_key=tenant.key)
    row = result.event
    assert row is not None and all(getattr(row, c) is not None for c in PARENTS), row
    return row


def _missing(column: str, row: UsageEvent) -> object:
    present = getattr(row, column)
    return uuid.uuid4() if isinstance(present, uuid.UUID) else present + 10**9


def _copy(row: UsageEvent, key: str, **changes: object) -> dict[str, object]:
    values = {c: getattr(row, c) for c in LEDGER_COLUMNS}
    return {**values, "id": uuid.uuid4(), "idempotency_key": key, **changes}


def _fk_violation(exc: BaseException) -> psycopg.errors.ForeignKeyViolation:
    cause = exc.__cause__
    assert isinstance(cause, psycopg.errors.ForeignKeyViolation), repr(exc)
    return cause


@pytest.mark.parametrize("column", list(PARENTS))
def test_a_row_naming_a_missing_parent_is_refused(catalog, tenant_a, column):
    row = _recorded(tenant_a)
    missing = _missing(column, row)

    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "orphan", **{column: missing}))

    error = _fk_violation(refused.value)
    assert error.diag.constraint_name == f"usage_{column}_parent"
    assert error.diag.message_detail == (
        f'Key ({column})=({missing}) is not present in table "{PARENTS[column]}".'
    )
    assert not UsageEvent.objects.filter(idempotency_key="orphan").exists()
    # The same row naming parents that are there is written.
    UsageEvent.objects.create(**_copy(row, "fine"))
    assert UsageEvent.objects.filter(idempotency_key="fine").exists()


def test_a_missing_profile_reads_as_a_vanished_profile(catalog, tenant_a):
    """``usage_record`` records again when a profile it named was deleted
    meanwhile; it knows that error by its words."""
    row = _recorded(tenant_a)
    for column, expected in [("profile_id", True), ("price_id", False)]:
        with pytest.raises(IntegrityError) as refused, transaction.atomic():
            UsageEvent.objects.create(**_copy(row, "x", **{column: _missing(column, row)}))
        assert profile_vanished(refused.value) is expected


@pytest.mark.parametrize("rows", [2, 40])  # a few rows (VALUES), a batch (unnest)
def test_one_missing_parent_refuses_the_whole_statement(catalog, tenant_a, rows):
    row = _recorded(tenant_a)
    batch = [_copy(row, f"b{i}") for i in range(rows)]
    batch[rows // 2]["profile_id"] = uuid.uuid4()
    shared = {"organization_id": row.organization_id, "api_key_id": row.api_key_id,
              "received_at": row.received_at}  # fmt: skip

    with pytest.raises(IntegrityError), transaction.atomic():
        ledger_insert(batch, shared)

    assert UsageEvent.objects.count() == 1
    del batch[rows // 2]
    with transaction.atomic():
        assert len(ledger_insert(batch, shared)) == rows - 1


@pytest.mark.parametrize("column", ["price_id", "ai_model_id", "profile_id", "api_key_id"])
def test_an_update_naming_a_missing_parent_is_refused(catalog, tenant_a, column):
    row = _recorded(tenant_a)

    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEvent.objects.filter(pk=row.pk).update(**{column: _missing(column, row)})

    row_now = UsageEvent.objects.get(pk=row.pk)
    assert getattr(row_now, column) == getattr(row, column)
    UsageEvent.objects.filter(pk=row.pk).update(**{column: None})  # no parent: fine


@pytest.mark.parametrize("column", list(PARENTS))
def test_a_parent_still_named_cannot_be_deleted_behind_djangos_back(catalog, tenant_a, column):
    row = _recorded(tenant_a)
    parent = getattr(row, column)
    with (
        pytest.raises(IntegrityError) as refused,
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        # Ours first: the other tables' foreign keys would refuse it at commit too.
        cursor.execute("SET CONSTRAINTS usage_parent_gone IMMEDIATE")
        cursor.execute(f"DELETE FROM {PARENTS[column]} WHERE id = %s", [parent])  # noqa: S608
    error = _fk_violation(refused.value)
    assert error.diag.constraint_name == f"usage_{column}_parent"
    assert "is still referenced" in error.diag.message_detail


def test_the_parents_check_waits_for_commit_as_the_foreign_keys_did(catalog, tenant_a):
    """Deferred: within a transaction the row may go before its parent goes
    elsewhere; what counts is what stands at commit."""
    row = _recorded(tenant_a)
    price = Price.objects.get(pk=row.price_id)
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM costs_price WHERE id = %s", [price.pk])
        UsageEvent.objects.filter(pk=row.pk).update(price=None)  # before COMMIT: fine
    assert not Price.objects.filter(pk=price.pk).exists()

    with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM costs_aimodel WHERE id = %s", [row.ai_model_id])
    assert AIModel.objects.filter(pk=row.ai_model_id).exists()


def test_djangos_deletions_of_parents_still_work(catalog, tenant_a):
    row = _recorded(tenant_a)
    tenant_a.key.delete()  # SET_NULL
    assert UsageEvent.objects.get(pk=row.pk).api_key_id is None
    AIModel.objects.get(pk=row.ai_model_id).prices.filter(organization__isnull=False).delete()
    tenant_a.org.delete()  # CASCADE: the ledger rows with it
    assert not UsageEvent.objects.exists()


# -- concurrently: no orphan either way, and no deadlock ----------------------------------


def _waiting_on_a_lock(fragment: str, timeout: float = 10) -> None:
    """Wait until another session's statement containing ``fragment`` waits on a lock."""
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    deadline = time.monotonic() + timeout
    with psycopg.connect(**params, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND pid <> pg_backend_pid() AND position(%s in query) > 0",
                [fragment],
            ).fetchone()
            if waiting and waiting[0]:
                return
            time.sleep(0.02)
    raise AssertionError(f"no statement with {fragment!r} came to wait on a lock")


def _orphans() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM costs_usageevent u WHERE u.profile_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM profiles_profile p WHERE p.id = u.profile_id)"
        )
        return cursor.fetchone()[0]


def _started(work) -> tuple[threading.Thread, list[IntegrityError | None]]:
    """``work`` running in a thread of its own (its own connection); the list
    gets None, or the IntegrityError it raised."""
    outcome: list[IntegrityError | None] = []

    def run() -> None:
        try:
            work()
            outcome.append(None)
        except IntegrityError as exc:
            outcome.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_a_parent_deleted_while_a_row_names_it_uncommitted_waits_and_is_refused(catalog, tenant_a):
    row = _recorded(tenant_a)
    doomed = Profile.objects.create(organization=tenant_a.org, external_id="doomed")

    def delete() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [doomed.pk])

    with transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "late", profile_id=doomed.pk))
        deleter, outcome = _started(delete)
        _waiting_on_a_lock("DELETE FROM profiles_profile")  # on the row's lock of it
    deleter.join(30)

    assert len(outcome) == 1 and outcome[0] is not None, outcome
    assert _fk_violation(outcome[0]).diag.constraint_name == "usage_profile_id_parent"
    assert Profile.objects.filter(pk=doomed.pk).exists()
    assert UsageEvent.objects.get(idempotency_key="late").profile_id == doomed.pk


def test_a_row_naming_a_parent_deleted_uncommitted_waits_and_is_refused(catalog, tenant_a):
    row = _recorded(tenant_a)
    doomed = Profile.objects.create(organization=tenant_a.org, external_id="doomed")

    def record() -> None:
        with transaction.atomic():
            UsageEvent.objects.create(**_copy(row, "late", profile_id=doomed.pk))

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [doomed.pk])
        writer, outcome = _started(record)
        _waiting_on_a_lock("INSERT INTO")
    writer.join(30)

    assert len(outcome) == 1 and profile_vanished(outcome[0]), outcome
    assert not UsageEvent.objects.filter(idempotency_key="late").exists()
    assert _orphans() == 0


def test_a_single_event_and_its_profiles_deletion_do_not_deadlock(catalog, tenant_a, monkeypatch):
    """The deletion locks the profile, then its rollups and counters; the
    one-statement event locks the profile before its rollup and counters:
    it waits for the deletion, finds the profile gone, and is recorded
    again for a profile of that name, created anew. (Locked only when the
    statement ended, the event held the rollup row the deletion folds.)"""
    import costs.services.profiles as profiles_module

    client = tenant_a.client()
    body = {"provider": "openai", "model": "gpt-4o", "profile": "doomed",
            "usage": {"input_tokens": 10, "output_tokens": 5}}  # fmt: skip
    for i in range(2):  # the profile is known, its rollup row there
        response = client.post("/api/v1/usage", {**body, "idempotency_key": f"w{i}"}, format="json")
        assert response.status_code == 201
    doomed = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    fold = profiles_module.rollup_fold_profiles
    locked = threading.Event()

    def fold_once_the_event_waits(**kwargs):
        locked.set()
        _waiting_on_a_lock("WITH ins AS")
        return fold(**kwargs)

    monkeypatch.setattr(profiles_module, "rollup_fold_profiles", fold_once_the_event_waits)
    with InBackground(lambda: profiles_delete(profiles=[doomed])):
        assert locked.wait(10)
        response = client.post("/api/v1/usage", {**body, "idempotency_key": "late"}, format="json")

    assert response.status_code == 201, response.content
    anew = Profile.objects.get(organization=tenant_a.org, external_id="doomed")
    assert anew.pk != doomed.pk
    assert UsageEvent.objects.get(idempotency_key="late").profile_id == anew.pk
    assert rollups_grouped(tenant_a.org) == ledger_grouped(tenant_a.org)


def test_a_key_deleted_in_the_middle_of_a_batch_does_not_deadlock_with_it(
    catalog, tenant_a, monkeypatch
):
    """The batch's ledger rows lock their key; the key's deletion (Django's,
    from the admin) takes the key's budgets and counters with it. Locking the
    key first, it waits for the batch to commit; locking it last, as Django
    deletes parents, it would hold the counters the batch is about to charge."""
    import costs.services.ingest as ingest_module

    budget = budget_create(org=tenant_a.org, name="Key spend", metric="cost",
                           period="monthly", limit=Decimal("100"), api_key=tenant_a.key)  # fmt: skip
    original = ingest_module.budget_charge_plan
    deletion: list[InBackground] = []

    def plan_then_let_the_deletion_in(*args, **kwargs):
        # After the ledger INSERT, before the rollups and counters.
        if not deletion:
            key = ApiKey.objects.get(pk=tenant_a.key.pk)
            deletion.append(InBackground(key.delete))
            _waiting_on_a_lock('FROM "profiles_apikey"')  # the deletion's lock of the key
        return original(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "budget_charge_plan", plan_then_let_the_deletion_in)
    now = datetime.now(UTC)
    events = [priced_call(f"k{i}", "0.10", occurred_at=now) for i in range(5)]
    results = usage_record(org=tenant_a.org, events=events, api_key=tenant_a.key)
    deletion[0].join(timeout=30)  # fails with the deletion's error (a deadlock), if any

    assert [r.status for r in results] == [201] * 5
    assert not ApiKey.objects.filter(pk=tenant_a.key.pk).exists()
    assert not BudgetPeriod.objects.filter(budget_id=budget.pk).exists()
    assert UsageEvent.objects.filter(api_key__isnull=True).count() == 5

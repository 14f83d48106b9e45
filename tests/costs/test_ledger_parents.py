"""The ledger's references to its parents (organization, profile, key, model,
price), gathered once per statement and checked and locked at commit by
triggers rather than by foreign key constraints (costs/migrations/0004): no
row may name a parent that is not there, whether the row or the parent goes
first."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime

import psycopg
import pytest
from django.db import IntegrityError, NotSupportedError, OperationalError, connection, transaction

from costs.models import AIModel, Price, UsageEvent
from costs.services import EventInput, usage_record
from costs.services.ledger import LEDGER_COLUMNS, ledger_insert
from profiles.models import Profile
from profiles.services import profile_vanished

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


def test_a_parent_let_go_of_before_commit_is_not_missing(catalog, tenant_a):
    """What counts is what the rows name at commit: a row written naming a
    profile, then set to none before the profile goes (as a profile's
    deletion does), commits."""
    row = _recorded(tenant_a)
    doomed = Profile.objects.create(organization=tenant_a.org, external_id="doomed")
    with transaction.atomic(), connection.cursor() as cursor:
        UsageEvent.objects.create(**_copy(row, "late", profile_id=doomed.pk))
        UsageEvent.objects.filter(profile_id=doomed.pk).update(profile=None)
        cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [doomed.pk])
    assert UsageEvent.objects.get(idempotency_key="late").profile_id is None


# -- concurrently: no orphan either way ----------------------------------


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


def test_a_parent_deleted_before_the_row_naming_it_commits_refuses_the_row(catalog, tenant_a):
    row = _recorded(tenant_a)
    doomed = Profile.objects.create(organization=tenant_a.org, external_id="doomed")

    def delete() -> None:
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [doomed.pk])

    with pytest.raises(IntegrityError) as refused, transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "late", profile_id=doomed.pk))
        deleter, outcome = _started(delete)  # commits: nothing it can see names the profile
        deleter.join(30)
        assert outcome == [None]

    assert profile_vanished(refused.value)
    assert not UsageEvent.objects.filter(idempotency_key="late").exists()
    assert _orphans() == 0


def test_a_row_naming_a_parent_deleted_uncommitted_waits_and_is_refused(catalog, tenant_a):
    row = _recorded(tenant_a)
    doomed = Profile.objects.create(organization=tenant_a.org, external_id="doomed")

    def record() -> None:
        with transaction.atomic():
            UsageEvent.objects.create(**_copy(row, "late", profile_id=doomed.pk))

    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("DELETE FROM profiles_profile WHERE id = %s", [doomed.pk])
        writer, outcome = _started(record)
        _waiting_on_a_lock("COMMIT")  # its check at commit, on the deleted row's lock
    writer.join(30)

    assert len(outcome) == 1 and profile_vanished(outcome[0]), outcome
    assert not UsageEvent.objects.filter(idempotency_key="late").exists()
    assert _orphans() == 0


# -- what the statements leave for the commit ---------------------------------------------


def _due() -> list[tuple]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT * FROM pg_temp.ledger_parents_due")
        return cursor.fetchall()


def test_each_statement_leaves_its_distinct_parents_for_the_commit_and_no_more(catalog, tenant_a):
    row = _recorded(tenant_a)
    other = Profile.objects.create(organization=tenant_a.org, external_id="other")
    shared = {"organization_id": row.organization_id, "api_key_id": row.api_key_id,
              "received_at": row.received_at}  # fmt: skip
    with transaction.atomic():
        ledger_insert(
            [_copy(row, f"b{i}", profile_id=[row.profile_id, other.pk][i % 2]) for i in range(40)],
            shared,
        )
        [due] = _due()
        assert due[0] == [row.organization_id]
        assert sorted(due[1], key=str) == sorted([row.profile_id, other.pk], key=str)
        assert (due[2], due[3], due[4]) == ([row.api_key_id], [row.ai_model_id], [row.price_id])
        # An update gathers only what it changed to; one changing no reference, nothing.
        UsageEvent.objects.filter(idempotency_key__startswith="b").update(tags={"x": "y"})
        assert len(_due()) == 1
        UsageEvent.objects.filter(idempotency_key="b1").update(profile_id=row.profile_id)
        assert _due()[1] == (None, [row.profile_id], None, None, None)
    assert _due() == []  # ON COMMIT DELETE ROWS


def test_the_gathering_table_is_made_again_when_the_session_drops_it(catalog, tenant_a):
    row = _recorded(tenant_a)
    with connection.cursor() as cursor:
        cursor.execute("DISCARD TEMP")
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "orphan", price_id=uuid.uuid4()))
    with transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "fine"))
    assert UsageEvent.objects.filter(idempotency_key="fine").exists()


def test_a_parent_is_deleted_only_in_read_committed(catalog, tenant_a):
    """Whether the ledger still names it is read at commit with a fresh
    snapshot, which only READ COMMITTED gives."""
    price = Price.objects.create(model=AIModel.objects.first(), effective_from=AT,
                                 organization=tenant_a.org)  # fmt: skip
    with pytest.raises(OperationalError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("DELETE FROM costs_price WHERE id = %s", [price.pk])
    assert Price.objects.filter(pk=price.pk).exists()
    Price.objects.filter(pk=price.pk).delete()
    assert not Price.objects.filter(pk=price.pk).exists()


def test_a_parent_table_still_named_cannot_be_truncated(catalog, tenant_a):
    _recorded(tenant_a)
    with pytest.raises(NotSupportedError), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE costs_price")
    assert Price.objects.exists()
    with (
        pytest.raises(OperationalError),  # outside READ COMMITTED: refused
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        cursor.execute("TRUNCATE costs_usageevent, costs_price")
    assert Price.objects.exists()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("TRUNCATE costs_usageevent, costs_price")  # the ledger with it: fine
    assert not Price.objects.exists()


def test_a_session_whose_check_went_gets_it_again(catalog, tenant_a):
    """Dropping the check's function (a migration undone and done again)
    drops the check on every session's table; the next write makes it again."""
    row = _recorded(tenant_a)
    with connection.cursor() as cursor:
        cursor.execute("DROP TRIGGER usage_parents_check ON pg_temp.ledger_parents_due")
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEvent.objects.create(**_copy(row, "orphan", price_id=uuid.uuid4()))
    assert not UsageEvent.objects.filter(idempotency_key="orphan").exists()


def test_an_update_giving_a_row_a_new_id_is_checked_too(catalog, tenant_a):
    row = _recorded(tenant_a)
    with pytest.raises(IntegrityError), transaction.atomic():
        UsageEvent.objects.filter(pk=row.pk).update(id=uuid.uuid4(), profile_id=uuid.uuid4())
    assert UsageEvent.objects.get(pk=row.pk).profile_id == row.profile_id

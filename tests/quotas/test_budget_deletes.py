"""Deleting budgets, or what they belong to (a profile, a key, an
organization), while a counter writer holds one of their periods, a settle
one of their reservations or the purge one of their holds: the deletion
takes those rows in the order the others take them (reservations by id,
periods by (budget, start), holds by id), not in its cascade's, so neither
waits on the other crosswise."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import connection

from profiles.models import ApiKey, Organization
from quotas.models import Budget, BudgetPeriod, Reservation, ReservationHold
from quotas.services import budgets_delete
from tests.admin_forms import operator_post
from tests.quotas.helpers import deleted_while_held

START = datetime(2026, 12, 1, tzinfo=UTC)
END = datetime(2027, 1, 1, tzinfo=UTC)
# Budget ids in the writers' order; their periods are opened the other way
# round, so the table's order (by period id) is the reverse of the writers'.
FIRST, SECOND = uuid.UUID(int=1), uuid.UUID(int=2**128 - 1)


def _delete_profile(tenant) -> None:
    from costs.services.profiles import profiles_delete

    profiles_delete(profiles=[tenant.profile])


def _delete_key(tenant) -> None:
    admin.site._registry[ApiKey].delete_queryset(
        operator_post(), ApiKey.objects.filter(pk=tenant.key.pk)
    )


def _delete_organization(tenant) -> None:
    admin.site._registry[Organization].delete_queryset(
        operator_post(), Organization.objects.filter(pk=tenant.org.pk)
    )


def _delete_budgets(tenant) -> None:
    budgets_delete(budgets=Budget.objects.filter(pk__in=[FIRST, SECOND]))


def _lock_period(period: BudgetPeriod) -> None:
    list(BudgetPeriod.objects.select_for_update().filter(pk=period.pk))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("owner", "delete"),
    [
        ("profile", _delete_profile),
        ("api_key", _delete_key),
        (None, _delete_organization),
        ("profile", _delete_budgets),
    ],
    ids=["profile", "key", "organization", "budgets"],
)
def test_a_deletion_waits_for_a_writer_holding_one_of_two_periods(tenant_a, owner, delete):
    if owner == "api_key":
        tenant_a.key.profile = None  # the key's own budgets, not its profile's
        tenant_a.key.save(update_fields=["profile"])
    scope = {owner: getattr(tenant_a, "key" if owner == "api_key" else "profile")} if owner else {}
    for budget_id in (FIRST, SECOND):
        Budget.objects.create(id=budget_id, organization=tenant_a.org, name=str(budget_id),
                              limit=Decimal(100), **scope)  # fmt: skip
    second = BudgetPeriod.objects.create(budget_id=SECOND, start=START, end=END)
    first = BudgetPeriod.objects.create(budget_id=FIRST, start=START, end=END)
    assert second.pk < first.pk
    # What every counter writer does: the periods in (budget, start) order.
    deleted_while_held(
        lambda: _lock_period(first), lambda: _lock_period(second), lambda: delete(tenant_a)
    )
    assert not Budget.objects.filter(pk__in=[FIRST, SECOND]).exists()
    assert not BudgetPeriod.objects.filter(pk__in=[first.pk, second.pk]).exists()


@pytest.mark.django_db(transaction=True)
def test_a_profile_deletion_waits_for_a_settle_holding_its_reservation(tenant_a):
    """A settle claims its held reservation, then changes the period: the
    deletion, which changes the reservation too (its profile goes), takes it
    before the period, or each would wait for the other."""
    budget = Budget.objects.create(
        id=FIRST,
        organization=tenant_a.org,
        name="Cap",
        limit=Decimal(100),
        profile=tenant_a.profile,
    )
    period = BudgetPeriod.objects.create(budget=budget, start=START, end=END)
    held = Reservation.objects.create(
        organization=tenant_a.org, profile=tenant_a.profile, expires_at=END
    )
    deleted_while_held(
        lambda: Reservation.objects.filter(pk=held.pk).update(status=Reservation.Status.SETTLED),
        lambda: _lock_period(period),
        lambda: _delete_profile(tenant_a),
    )
    assert not BudgetPeriod.objects.filter(pk=period.pk).exists()
    assert Reservation.objects.get(pk=held.pk).profile_id is None


@pytest.mark.django_db(transaction=True)
def test_a_budget_deletion_waits_for_the_purge_holding_one_of_its_holds(tenant_a):
    """The purge of old reservations and a deleted budget's cascade both
    delete holds: both lock them in id order first, whatever order their
    own statements would reach them in (here the cascade's, by period, is the
    reverse)."""
    budget = Budget.objects.create(id=FIRST, organization=tenant_a.org, name="Cap",
                                   limit=Decimal(100))  # fmt: skip
    older = BudgetPeriod.objects.create(budget=budget, start=START - (END - START), end=START)
    newer = BudgetPeriod.objects.create(budget=budget, start=START, end=END)
    ended = Reservation.objects.create(organization=tenant_a.org, expires_at=START,
                                       status=Reservation.Status.EXPIRED, ended_at=START)  # fmt: skip
    first = ReservationHold.objects.create(reservation=ended, period=newer, amount=Decimal(1))
    second = ReservationHold.objects.create(reservation=ended, period=older, amount=Decimal(1))

    def lock(hold: ReservationHold) -> None:
        list(ReservationHold.objects.select_for_update().filter(pk=hold.pk))

    def delete() -> None:
        with connection.cursor() as cursor:  # the cascade reads the holds by period
            cursor.execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        budgets_delete(budgets=[budget])

    deleted_while_held(lambda: lock(first), lambda: lock(second), delete)
    assert not ReservationHold.objects.filter(pk__in=[first.pk, second.pk]).exists()

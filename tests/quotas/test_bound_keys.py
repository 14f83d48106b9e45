"""A key bound to a profile acts only for that profile (API.md): it cannot
release, settle, read or resolve what belongs to another profile of its own
organization, which it answers as if it did not exist."""

from __future__ import annotations

from decimal import Decimal

import pytest
import time_machine

from quotas.models import Reservation
from quotas.services import budget_create
from tests.factories import AlertFactory, ProfileFactory, make_key
from tests.quotas.helpers import GPT4O_CALL_COST, check, ingest, period_of, utc

NOW = utc(2026, 11, 20, 12)


@pytest.fixture
def frozen():
    with time_machine.travel(NOW, tick=False):
        yield


@pytest.fixture
def two_users(tenant_a, catalog, frozen):
    """Keys bound to alice and to bob in one organization, and its money budget."""
    bob = ProfileFactory(organization=tenant_a.org, external_id="bob")
    budget = budget_create(org=tenant_a.org, name="Org monthly", limit=Decimal("10"))
    _, alice_secret = make_key(tenant_a.org, profile=tenant_a.profile, name="alice")
    _, bob_secret = make_key(tenant_a.org, profile=bob, name="bob")
    return tenant_a.client(alice_secret), tenant_a.client(bob_secret), bob, budget


def _reserve(client) -> str:
    response = check(client, reserve=True)
    assert response.status_code == 200, response.content
    return response.json()["reservation_id"]


def test_another_profiles_reservation_cannot_be_released(tenant_a, two_users):
    alice, bob, _, budget = two_users
    rid = _reserve(bob)
    response = alice.delete(f"/api/v1/reservations/{rid}")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.HELD
    assert period_of(budget).reserved == GPT4O_CALL_COST
    # Its own key, and a key of the whole organization, may.
    assert bob.delete(f"/api/v1/reservations/{rid}").status_code == 204
    assert period_of(budget).reserved == 0
    other = _reserve(bob)
    assert tenant_a.client().delete(f"/api/v1/reservations/{other}").status_code == 204


def test_usage_citing_another_profiles_reservation_does_not_settle_it(two_users):
    alice, bob, _, budget = two_users
    rid = _reserve(bob)
    response = ingest(alice, "alice-1", reservation_id=rid)
    assert response.status_code == 201, response.content
    # Recorded and charged for alice; bob's hold is untouched.
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.HELD
    period = period_of(budget)
    assert period.reserved == GPT4O_CALL_COST
    assert period.spent == GPT4O_CALL_COST
    # Bob's own event settles it.
    assert ingest(bob, "bob-1", reservation_id=rid).status_code == 201
    assert Reservation.objects.get(pk=rid).status == Reservation.Status.SETTLED
    period = period_of(budget)
    assert period.reserved == 0
    assert period.spent == 2 * GPT4O_CALL_COST


def test_another_profiles_alerts_cannot_be_read_or_resolved(tenant_a, two_users):
    alice, bob, bob_profile, _ = two_users
    bobs = AlertFactory(organization=tenant_a.org, profile=bob_profile)
    alices = AlertFactory(organization=tenant_a.org, profile=tenant_a.profile)
    for action in ("read", "resolve"):
        response = alice.post(f"/api/v1/alerts/{bobs.pk}/{action}")
        assert response.status_code == 404, action
    assert alice.post("/api/v1/alerts/read-all").json() == {"marked": 1}
    bobs.refresh_from_db()
    alices.refresh_from_db()
    assert (bobs.read_at, bobs.resolved_at) == (None, None)
    assert alices.read_at == NOW
    assert bob.post(f"/api/v1/alerts/{bobs.pk}/resolve").status_code == 200
    bobs.refresh_from_db()
    assert bobs.resolved_at == NOW


def test_head_needs_the_scope_get_needs(tenant_a):
    _, secret = make_key(tenant_a.org, scopes="ingest")
    client = tenant_a.client(secret)
    for url in ("/api/v1/usage", "/api/v1/budgets", "/api/v1/alerts", "/api/v1/dashboard"):
        assert client.get(url).status_code == 403, url
        assert client.head(url).status_code == 403, url
    assert tenant_a.client().head("/api/v1/budgets").status_code == 200

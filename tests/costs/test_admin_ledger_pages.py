"""The ledger changelist's pages across several organizations: each page is
what sorting the whole ledger would give, found from each organization's
time index (``costs.admin_filters.LedgerChangeList``)."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from costs.admin import UsageEventAdmin
from costs.models import UsageEvent
from costs.services import EventInput, usage_record
from profiles.models import Membership
from tests.factories import OrganizationFactory, UserFactory

pytestmark = pytest.mark.django_db

LEDGER = "admin:costs_usageevent_changelist"
PER_PAGE = 3
START = datetime(2026, 11, 1, 12, tzinfo=UTC)
ID = re.compile(r'name="_selected_action" value="([0-9a-f-]{36})"')


@pytest.fixture
def orgs(tenant_a, tenant_b):
    """Three organizations whose events interleave in time: a busy one, a quiet
    one, one in between; some share a moment with another organization's or
    their own (ties are ordered by id)."""
    third = OrganizationFactory(slug="initech", name="Initech")
    plan = {
        tenant_a.org: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 11],
        tenant_b.org: [3, 10, 12],
        third: [1, 4, 7, 10, 13, 13],
    }
    for org, minutes in plan.items():
        usage_record(
            org=org,
            events=[
                EventInput(
                    idempotency_key=f"{org.slug}-{i}",
                    request_hash="h",
                    provider="openai" if i % 2 else "anthropic",
                    model="m",
                    operation="chat",
                    usage={"requests": 1},
                    occurred_at=START + timedelta(minutes=m),
                    cost=Decimal("0.5"),
                )
                for i, m in enumerate(minutes)
            ],
        )
    return [tenant_a.org, tenant_b.org, third]


@pytest.fixture(autouse=True)
def _small_pages(monkeypatch):
    monkeypatch.setattr(UsageEventAdmin, "list_per_page", PER_PAGE)


def _walk(client: Client, params: dict) -> list[str]:
    """Every page's event ids, page after page, until an empty one."""
    seen: list[str] = []
    for page in range(1, 30):
        resp = client.get(reverse(LEDGER), {**params, "p": page})
        assert resp.status_code == 200
        ids = ID.findall(resp.content.decode())
        if not ids:
            return seen
        assert len(ids) <= PER_PAGE
        seen += ids
    raise AssertionError("the pages do not end")


def _expected(qs, newest_first: bool = True) -> list[str]:
    # Oldest first (?o=1) keeps the admin's own tie-break, newest id first.
    order = ("-occurred_at" if newest_first else "occurred_at", "-id")
    return [str(pk) for pk in qs.order_by(*order).values_list("id", flat=True)]


def _operator() -> Client:
    client = Client()
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    return client


def test_an_operators_pages_are_the_whole_ledger_in_time_order(orgs):
    assert _walk(_operator(), {}) == _expected(UsageEvent.objects.all())


def test_oldest_first_and_with_a_filter_too(orgs):
    client = _operator()
    everything = UsageEvent.objects.all()
    assert _walk(client, {"o": "1"}) == _expected(everything, newest_first=False)
    openai = everything.filter(provider="openai")
    assert _walk(client, {"provider": "openai"}) == _expected(openai)


def test_a_member_of_two_organizations_pages_through_both_and_no_other(orgs):
    acme, globex, initech = orgs
    user = UserFactory(is_staff=True)
    for org in (acme, initech):
        Membership.objects.create(organization=org, user=user, role=Membership.Role.VIEWER)
    client = Client()
    client.force_login(user)
    mine = UsageEvent.objects.filter(organization__in=[acme, initech])
    assert _walk(client, {}) == _expected(mine)


@pytest.mark.parametrize(
    ("page", "bound"),
    # The newest of the organizations' k-th newest events, k = 3 x page:
    # page 1: Acme's 3rd (minute 10), Globex's (3), Initech's (10) -> 10;
    # page 2: Acme's 6th (7), Globex has 3, Initech's 6th (1) -> 7.
    [(1, "12:10:00"), (2, "12:07:00")],
)
def test_the_page_is_read_from_a_window_of_time_not_the_whole_ledger(orgs, page, bound):
    with CaptureQueriesContext(connection) as captured:
        _operator().get(reverse(LEDGER), {"p": page})
    pages = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].startswith('SELECT "costs_usageevent"."id", ') and "LIMIT" in q["sql"]
    ]
    assert len(pages) == 1
    assert f'"costs_usageevent"."occurred_at" >= \'2026-11-01 {bound}' in pages[0]


def test_an_action_on_all_matching_events_still_takes_all_of_them(orgs):
    client = _operator()
    resp = client.post(
        reverse(LEDGER),
        {"action": "export_csv", "select_across": "1", "index": "0",
         "_selected_action": [str(UsageEvent.objects.first().pk)]},
    )  # fmt: skip
    assert resp.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode())))
    assert len(rows) - 1 == UsageEvent.objects.count() == 22


def test_a_search_still_pages_through_every_match(orgs):
    """A search is left to the full sort (its matches may be few, and the
    walks to k of them long); its pages are the same as ever."""
    client = _operator()
    acme = UsageEvent.objects.filter(idempotency_key__icontains="acme")
    assert _walk(client, {"q": "acme"}) == _expected(acme)


def test_a_filter_too_sparse_for_the_window_is_paged_by_the_full_sort(orgs, monkeypatch):
    """Windows of the newest 3 and 6 events per organization (x1, x2) hold
    no anthropic event of Globex's; its pages are still every match."""
    from costs.admin_filters import LedgerChangeList

    monkeypatch.setattr(LedgerChangeList, "WIDENING", (1, 2))
    rare = UsageEvent.objects.filter(provider="anthropic", organization=orgs[1])
    assert rare.count() == 2
    client = _operator()
    params = {"provider": "anthropic", "q": "globex"}
    assert _walk(client, params) == _expected(rare)

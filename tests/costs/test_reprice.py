"""Repricing: usage recorded before its model had a price is priced once a price
exists, exactly once, with the daily rollups moved to match the ledger.

The new model "gpt-new" is priced by these tests at $3.00/M input and $12.00/M output
(a made-up list price); gpt-4o is $2.50/M input, $10/M output (published).
"""

from __future__ import annotations

import io
import threading
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.models import Sum

from costs.models import COUNT_METERS, METERS, AIModel, DailyUsage, Price, Provider, UsageEvent
from costs.selectors.catalog import catalog_cache_clear
from costs.services import EventInput, usage_record, usage_reprice

REQUESTED = "gpt-new-0601"  # what the client sends; the catalog will call it gpt-new
PRICE_FROM = datetime(2026, 6, 1, tzinfo=UTC)
BEFORE_PRICE = datetime(2026, 5, 31, 23, 0, tzinfo=UTC)
AFTER_PRICE = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


def _record(tenant, key: str, *, at: datetime = AFTER_PRICE, model: str = REQUESTED, **extra):
    body = {
        "idempotency_key": key,
        "provider": "openai",
        "model": model,
        "operation": "chat",
        "usage": {"input_tokens": 1000, "output_tokens": 100},
        "occurred_at": at.isoformat(),
        **extra,
    }
    resp = tenant.client().post("/api/v1/usage", body, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


def _price_gpt_new(organization=None) -> Price:
    """Give the unknown name a catalog model and a price from PRICE_FROM on."""
    provider, _ = Provider.objects.get_or_create(slug="openai", defaults={"name": "OpenAI"})
    model, _ = AIModel.objects.get_or_create(
        provider=provider, slug="gpt-new", defaults={"aliases": [REQUESTED]}
    )
    price = Price.objects.create(
        model=model,
        organization=organization,
        effective_from=PRICE_FROM,
        input_tokens=Decimal("0.000003"),  # $3.00/M
        output_tokens=Decimal("0.000012"),  # $12.00/M
    )
    catalog_cache_clear()
    return price


# 1,000 in x $3/M = 0.003; 100 out x $12/M = 0.0012; total 0.0042 per event
COST_PER_EVENT = Decimal("0.004200000000")

ROLLUP_KEY = ("organization_id", "day", "profile_id", "provider", "model", "operation")


def _ledger_by_key(org) -> dict[tuple, dict]:
    out: dict[tuple, dict] = defaultdict(lambda: defaultdict(Decimal))
    for e in UsageEvent.objects.filter(organization=org):
        acc = out[tuple(getattr(e, k) for k in ROLLUP_KEY)]
        acc["events"] += 1
        acc["unpriced_events"] += 0 if e.priced else 1
        acc["cost"] += e.cost
        for m in COUNT_METERS:
            acc[m] += getattr(e, m)
        acc["audio_seconds"] += e.audio_seconds
    return {k: dict(v) for k, v in out.items()}


def _rollup_by_key(org) -> dict[tuple, dict]:
    out = {}
    for r in DailyUsage.objects.filter(organization=org):
        row = {
            "events": r.events,
            "unpriced_events": r.unpriced_events,
            "cost": r.cost,
            "audio_seconds": r.audio_seconds,
            **{m: getattr(r, m) for m in COUNT_METERS},
        }
        # Every row, those at zero too: a repricing deletes the rows it empties.
        out[tuple(getattr(r, k) for k in ROLLUP_KEY)] = row
    return out


def _assert_rollups_equal_ledger(org) -> None:
    ledger = _ledger_by_key(org)
    rollup = _rollup_by_key(org)
    assert set(rollup) == set(ledger)
    for key, sums in ledger.items():
        for column, value in sums.items():
            assert rollup[key][column] == value, (key, column)


# -- the single-threaded contract ---------------------------------------------------------


@pytest.mark.django_db
def test_unknown_model_is_recorded_unpriced_at_zero_with_an_unpriced_rollup(catalog, tenant_a):
    out = _record(tenant_a, "u-1", profile="p-1")
    assert out["priced"] is False
    assert out["cost"] == "0.000000000000"
    assert out["price_id"] is None
    assert out["model"] == REQUESTED
    (row,) = DailyUsage.objects.filter(organization=tenant_a.org)
    assert row.model == REQUESTED
    assert row.events == 1
    assert row.unpriced_events == 1
    assert row.cost == 0
    assert row.input_tokens == 1000


@pytest.mark.django_db
def test_reprice_prices_events_once_a_price_exists(catalog, tenant_a):
    ids = [_record(tenant_a, f"u-{i}", profile=f"p-{i % 2}")["id"] for i in range(3)]
    price = _price_gpt_new()

    stats = usage_reprice()

    assert stats.repriced == 3
    for event in UsageEvent.objects.filter(id__in=ids):
        assert event.priced is True
        assert event.cost == COST_PER_EVENT
        assert event.price_id == price.pk
        assert event.model == "gpt-new"
        assert event.model_requested == REQUESTED
        assert event.ai_model_id == price.model_id
        assert event.cost_breakdown == {
            "input_tokens": "0.003000000000",
            "output_tokens": "0.001200000000",
        }
    _assert_rollups_equal_ledger(tenant_a.org)
    totals = DailyUsage.objects.filter(organization=tenant_a.org).aggregate(
        cost=Sum("cost"), events=Sum("events"), unpriced=Sum("unpriced_events")
    )
    assert totals == {"cost": 3 * COST_PER_EVENT, "events": 3, "unpriced": 0}  # 0.0126
    # No row is left under the unresolved name, not even one at zero.
    assert not DailyUsage.objects.filter(model=REQUESTED).exists()


@pytest.mark.django_db
def test_reprice_shows_up_in_the_ledger_list(catalog, tenant_a):
    event_id = _record(tenant_a, "u-1")["id"]
    _price_gpt_new()
    usage_reprice()
    (row,) = tenant_a.client().get("/api/v1/usage").json()["results"]
    assert row["id"] == event_id
    assert row["priced"] is True
    assert row["cost"] == "0.004200000000"
    assert row["model"] == "gpt-new"


@pytest.mark.django_db
def test_reprice_through_an_alias_added_to_an_existing_model(catalog, tenant_a):
    _record(tenant_a, "u-1", model="gpt-4o-preview-x", at=AFTER_PRICE)
    gpt4o = AIModel.objects.get(provider__slug="openai", slug="gpt-4o")
    gpt4o.aliases = [*gpt4o.aliases, "gpt-4o-preview-x"]
    gpt4o.save()
    catalog_cache_clear()

    assert usage_reprice(org=tenant_a.org).repriced == 1

    event = UsageEvent.objects.get()
    # 1,000 x $2.50/M = 0.0025; 100 x $10/M = 0.001; total 0.0035
    assert event.cost == Decimal("0.0035")
    assert event.model == "gpt-4o"
    assert event.price_id == Price.objects.get(model=gpt4o, organization__isnull=True).pk
    _assert_rollups_equal_ledger(tenant_a.org)


@pytest.mark.django_db
def test_an_event_moving_to_its_models_name_moves_between_budgets(catalog, tenant_a):
    from quotas.models import BudgetPeriod
    from quotas.reconcile import periods_reconcile
    from quotas.services import budget_create

    def budget(name: str, **fields):
        return budget_create(org=tenant_a.org, name=name, limit=Decimal(10**6), **fields)

    by_model = budget("gpt-new calls", metric="requests", model="gpt-new")
    by_name = budget("as sent", metric="requests", model=REQUESTED)
    tokens = budget("all tokens", metric="total_tokens")
    money = budget("all money")
    with_time = {"at": datetime.now(UTC) - timedelta(minutes=5)}
    _record(tenant_a, "u-1", **with_time)
    assert BudgetPeriod.objects.get(budget=by_name).spent == 1  # recorded under the name sent
    _price_gpt_new()

    assert usage_reprice(org=tenant_a.org).repriced == 1

    spent = {
        b.name: BudgetPeriod.objects.get(budget=b).spent for b in (by_model, by_name, tokens, money)
    }
    # 1,000 x $3/M + 100 x $12/M = 0.0042
    assert spent == {
        "gpt-new calls": 1,
        "as sent": 0,
        "all tokens": 1100,
        "all money": Decimal("0.0042"),
    }
    assert periods_reconcile(org=tenant_a.org) == []


@pytest.mark.django_db
def test_reprice_moves_rollups_in_one_pass_in_key_order(catalog, tenant_a, monkeypatch):
    from costs.services import rollups

    # Rows of both sides (as recorded, as repriced) for two profiles and none:
    # one pass over them all in key order, as a batch locks them, so the two
    # cannot deadlock; two passes (take off, then add) could lock out of order.
    for i, profile in enumerate(["p-b", "p-a", None, "p-b"]):
        _record(tenant_a, f"u-{i}", **({"profile": profile} if profile else {}))
    _price_gpt_new()
    written: list[list[tuple]] = []
    upsert = rollups._upsert

    def spy(part, with_profile):
        written.append([key for key, _ in part])
        return upsert(part, with_profile)

    monkeypatch.setattr(rollups, "_upsert", spy)
    assert usage_reprice(org=tenant_a.org).repriced == 4
    # Rows with a profile, then rows without: one statement each, every row
    # once, in the key order every rollup writer locks them in.
    # (Both sides: the repriced events carry the new price's model name.)
    assert [[key[2] is not None for key in keys] for keys in written] == [[True] * 4, [False] * 2]
    for keys in written:
        assert keys == sorted(keys, key=lambda k: tuple("" if v is None else str(v) for v in k))
    _assert_rollups_equal_ledger(tenant_a.org)


@pytest.mark.django_db
def test_running_reprice_again_changes_nothing(catalog, tenant_a):
    for i in range(3):
        _record(tenant_a, f"u-{i}")
    _price_gpt_new()
    assert usage_reprice().repriced == 3
    costs = dict(UsageEvent.objects.values_list("id", "cost"))
    rollup = _rollup_by_key(tenant_a.org)

    again = usage_reprice()

    assert again.repriced == 0
    assert again.examined == 0
    assert dict(UsageEvent.objects.values_list("id", "cost")) == costs
    assert _rollup_by_key(tenant_a.org) == rollup


@pytest.mark.django_db
def test_event_before_the_prices_effective_from_stays_unpriced(catalog, tenant_a):
    early = _record(tenant_a, "early", at=BEFORE_PRICE)["id"]
    late = _record(tenant_a, "late", at=AFTER_PRICE)["id"]
    _price_gpt_new()

    stats = usage_reprice()

    assert (stats.examined, stats.repriced) == (2, 1)
    early_event = UsageEvent.objects.get(id=early)
    assert early_event.priced is False
    assert early_event.cost == 0
    assert early_event.price_id is None
    assert early_event.model == REQUESTED
    assert UsageEvent.objects.get(id=late).cost == COST_PER_EVENT
    _assert_rollups_equal_ledger(tenant_a.org)
    assert DailyUsage.objects.get(day=BEFORE_PRICE.date()).unpriced_events == 1
    # Still examinable later, still not priceable.
    assert usage_reprice().repriced == 0


@pytest.mark.django_db
def test_an_override_of_another_tenant_does_not_price_my_events(catalog, tenant_a, tenant_b):
    mine = _record(tenant_a, "u-a")["id"]
    theirs = _record(tenant_b, "u-b")["id"]
    _price_gpt_new(organization=tenant_b.org)

    assert usage_reprice().repriced == 1

    assert UsageEvent.objects.get(id=mine).priced is False
    assert UsageEvent.objects.get(id=theirs).cost == COST_PER_EVENT
    _assert_rollups_equal_ledger(tenant_a.org)
    _assert_rollups_equal_ledger(tenant_b.org)


@pytest.mark.django_db
def test_priced_events_are_never_touched(catalog, tenant_a):
    priced = _record(tenant_a, "p", model="gpt-4o")
    assert priced["priced"] is True
    _record(tenant_a, "u")
    _price_gpt_new()
    stats = usage_reprice()
    assert (stats.examined, stats.repriced) == (1, 1)
    # 1,000 x $2.50/M + 100 x $10/M = 0.0035
    assert UsageEvent.objects.get(id=priced["id"]).cost == Decimal("0.0035")


@pytest.mark.django_db
def test_reprice_command_prints_counts_and_touches_only_the_named_org(catalog, tenant_a, tenant_b):
    a_ids = [_record(tenant_a, f"a-{i}")["id"] for i in range(2)]
    _record(tenant_a, "a-early", at=BEFORE_PRICE)
    b_id = _record(tenant_b, "b-0")["id"]
    _price_gpt_new()

    out = io.StringIO()
    call_command("reprice", "--org", tenant_a.org.slug, stdout=out)

    assert out.getvalue().strip() == "examined 3 unpriced events, repriced 2"
    assert all(e.priced for e in UsageEvent.objects.filter(id__in=a_ids))
    assert UsageEvent.objects.get(id=b_id).priced is False
    assert DailyUsage.objects.filter(organization=tenant_b.org).get().unpriced_events == 1

    out = io.StringIO()
    call_command("reprice", stdout=out)  # every org: only B's event is left to price
    assert out.getvalue().strip() == "examined 2 unpriced events, repriced 1"
    assert UsageEvent.objects.get(id=b_id).cost == COST_PER_EVENT


@pytest.mark.django_db
def test_reprice_command_refuses_an_unknown_org(catalog):
    with pytest.raises(CommandError, match="nope"):
        call_command("reprice", "--org", "nope", stdout=io.StringIO())


@pytest.mark.django_db
def test_reprice_of_named_event_ids_prices_only_those(catalog, tenant_a):
    first, second = (_record(tenant_a, f"u-{i}")["id"] for i in range(2))
    _price_gpt_new()
    assert usage_reprice(event_ids=[first]).repriced == 1
    assert UsageEvent.objects.get(id=first).priced is True
    assert UsageEvent.objects.get(id=second).priced is False
    _assert_rollups_equal_ledger(tenant_a.org)


# -- concurrency ------------------------------------------------------------------------------


def _seed_unpriced(tenant, n: int) -> None:
    base = AFTER_PRICE
    (usage_record)(
        org=tenant.org,
        events=[
            EventInput(
                idempotency_key=f"c-{i}",
                request_hash=f"c-{i}",
                provider="openai",
                model=REQUESTED,
                operation="chat",
                usage={"input_tokens": 1000, "output_tokens": 100},
                occurred_at=base + timedelta(days=i % 3, minutes=i),
                profile=f"p-{i % 2}",
            )
            for i in range(n)
        ],
    )


@pytest.mark.django_db(transaction=True)
def test_concurrent_reprices_price_each_event_exactly_once(catalog, tenant_a, monkeypatch):
    import costs.services.reprice as reprice_module

    monkeypatch.setattr(reprice_module, "BATCH", 25)  # small batches so the threads interleave
    _seed_unpriced(tenant_a, 300)
    assert UsageEvent.objects.filter(priced=False).count() == 300
    _price_gpt_new()

    barrier = threading.Barrier(4)
    results: list[int] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            results.append(usage_reprice().repriced)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert len(results) == 4
    assert sum(results) == 300  # every event repriced by exactly one run

    assert not UsageEvent.objects.filter(priced=False).exists()
    assert set(UsageEvent.objects.values_list("cost", flat=True)) == {COST_PER_EVENT}
    ledger_total = UsageEvent.objects.aggregate(s=Sum("cost"))["s"]
    assert ledger_total == 300 * COST_PER_EVENT  # 300 x 0.0042 = 1.26
    rollup = DailyUsage.objects.filter(organization=tenant_a.org).aggregate(
        cost=Sum("cost"), events=Sum("events"), unpriced=Sum("unpriced_events")
    )
    # A double reprice would add an event's cost to its rollup twice.
    assert rollup == {"cost": Decimal("1.26"), "events": 300, "unpriced": 0}
    _assert_rollups_equal_ledger(tenant_a.org)


@pytest.mark.django_db
@pytest.mark.parametrize("model", [REQUESTED, "gpt-new"])
def test_the_all_time_summary_after_a_reprice_is_the_ledgers(catalog, tenant_a, model):
    """The summary reads the rollups when asked for all time, the ledger when
    given a time range; a repricing moves the events to their model's name
    and deletes the rollup rows it empties, which must not show."""
    for i in range(2):
        _record(tenant_a, f"u-{i}", profile="p-1")
    _price_gpt_new()
    usage_reprice()
    client = tenant_a.client()
    all_time = client.get("/api/v1/usage/summary", {"model": model}).json()
    ranged = client.get(
        "/api/v1/usage/summary", {"model": model, "since": "2000-01-01T00:00:00Z"}
    ).json()
    assert all_time == ranged
    events = 2 if model == "gpt-new" else 0
    assert all_time["totals"]["events"] == events
    assert len(all_time["by_provider"]) == (1 if events else 0)


@pytest.mark.django_db(transaction=True)
def test_a_rollup_row_added_to_while_a_reprice_empties_it_keeps_the_addition(
    catalog, tenant_a, monkeypatch
):
    """A repricing deletes the row it empties while holding its lock; an
    ingestion's upsert on that row meanwhile (one that read the catalog
    before the price came) waits for it, then writes a row of its own: its
    event is counted, the repriced ones are not counted twice."""
    import costs.services.reprice as reprice_module
    from costs.services.rollups import rollup_add_rows
    from tests.quotas.helpers import InBackground, until_a_lock_wait

    first = _record(tenant_a, "u-0")
    emptied = DailyUsage.objects.get(organization=tenant_a.org, model=REQUESTED).pk
    _price_gpt_new()
    moved, release = threading.Event(), threading.Event()
    rollup_move = reprice_module.rollup_move

    def move_then_hold(**kwargs):
        rollup_move(**kwargs)
        moved.set()
        assert release.wait(30)  # the emptied row deleted, the transaction open

    key = (tenant_a.org.pk, AFTER_PRICE.date(), None, "openai", REQUESTED, "chat")
    usage = {"input_tokens": 1000, "output_tokens": 100}
    addition = [(key, False, [usage.get(m, 0) for m in METERS], Decimal(0), None)]
    monkeypatch.setattr(reprice_module, "rollup_move", move_then_hold)
    with InBackground(usage_reprice):
        assert moved.wait(30)
        with InBackground(lambda: rollup_add_rows(rows=addition)):
            until_a_lock_wait()  # the addition waits for the reprice's row lock
            release.set()
    rows = {
        r.model: (r.events, r.unpriced_events, r.cost)
        for r in DailyUsage.objects.filter(organization=tenant_a.org)
    }
    assert rows == {REQUESTED: (1, 1, Decimal(0)), "gpt-new": (1, 0, COST_PER_EVENT)}
    # The emptied row went; the addition is a row of its own.
    assert DailyUsage.objects.get(organization=tenant_a.org, model=REQUESTED).pk != emptied
    assert UsageEvent.objects.get(id=first["id"]).priced is True


@pytest.mark.django_db
def test_a_batch_of_two_organizations_is_repriced_in_their_id_order(
    catalog, tenant_a, tenant_b, monkeypatch
):
    """Concurrent runs lock each organization's rollups and counters as a
    group: the groups go in one order, whatever order the events came in."""
    import costs.services.reprice as reprice_module

    later, sooner = sorted([tenant_a, tenant_b], key=lambda t: str(t.org.pk), reverse=True)
    _record(later, "u-0")  # the first event of the batch (ids grow with time)
    _record(sooner, "u-1")
    _price_gpt_new()
    order: list[object] = []
    rollup_move = reprice_module.rollup_move

    def noted(**kwargs):
        order.append(kwargs["after"][0].organization_id)
        rollup_move(**kwargs)

    monkeypatch.setattr(reprice_module, "rollup_move", noted)
    assert usage_reprice().repriced == 2
    assert order == [sooner.org.pk, later.org.pk]


@pytest.mark.django_db
def test_an_event_that_would_price_past_the_maximum_stays_unpriced_and_the_rest_go_on(
    catalog, tenant_a
):
    """Ingestion refuses an event pricing to more than MAX_EVENT_COST; a
    repricing leaves it unpriced instead of failing its whole batch, for
    every tenant, on every run (10^12 tokens at $1 is past the ledger's column)."""
    huge = _record(tenant_a, "huge", usage={"input_tokens": 10**12})
    normal = _record(tenant_a, "normal")
    price = _price_gpt_new()
    Price.objects.filter(pk=price.pk).update(input_tokens=Decimal(1))  # $1 a token
    catalog_cache_clear()

    assert usage_reprice().repriced == 1

    assert UsageEvent.objects.get(id=huge["id"]).priced is False
    assert UsageEvent.objects.get(id=normal["id"]).priced is True
    _assert_rollups_equal_ledger(tenant_a.org)

"""Recording usage through the API: POST /api/v1/usage and /api/v1/usage/batch.

Every expected cost is worked out by hand from the providers' published list prices
(quoted per million units, or per minute for Whisper) and written next to the test.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from django.db import connection
from django.db.models import Count, Q, Sum
from django.test.utils import CaptureQueriesContext
from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH, MAX_CACHED_STATEMENT_PARAMS

from costs.models import AIModel, DailyUsage, Price, UsageEvent
from costs.pricing.engine import METERS
from costs.selectors.catalog import model_resolve
from profiles.api.renderers import _PLAIN_ONLY, _not_plain
from profiles.models import Profile
from quotas.models import Budget, BudgetPeriod
from quotas.services import budget_create
from tests.factories import make_key

USAGE_URL = "/api/v1/usage"
BATCH_URL = "/api/v1/usage/batch"
MILLION = Decimal(1_000_000)


def per_million(dollars: str) -> Decimal:
    """A published "$X per 1M units" price as dollars per single unit."""
    return Decimal(dollars) / MILLION


def post(client, body, url: str = USAGE_URL):
    return client.post(url, data=json.dumps(body), content_type="application/json")


def client_post_raw(client, text: str, url: str = USAGE_URL):
    return client.post(url, data=text, content_type="application/json")


def event(key: str, **fields) -> dict:
    body = {
        "idempotency_key": key,
        "provider": "openai",
        "model": "gpt-4o",
        "usage": {"input_tokens": 1500, "output_tokens": 2000},
    }
    body.update(fields)
    return body


def global_price(provider: str, slug: str) -> Price:
    return Price.objects.get(
        model__provider__slug=provider, model__slug=slug, organization__isnull=True
    )


def copy_price(old: Price, **changes) -> Price:
    """A new Price row for the same model: same rates unless ``changes`` says otherwise."""
    fields = {m: getattr(old, m) for m in METERS}
    fields.update(model=old.model, tiers=old.tiers, effective_from=old.effective_from)
    fields.update(changes)
    return Price.objects.create(**fields)


def counts() -> tuple[int, int, int]:
    return UsageEvent.objects.count(), DailyUsage.objects.count(), Profile.objects.count()


@pytest.fixture
def api(tenant_a, catalog):
    return tenant_a.client()


# -- pricing through the API -----------------------------------------------------------


def test_gpt_4o_tokens_are_priced_at_published_rates(api, tenant_a):
    response = post(api, event("gpt4o-1"))

    # gpt-4o: $2.50/M input, $10/M output.
    # 1,500 x 2.50/1e6 = 0.00375 ; 2,000 x 10/1e6 = 0.02 ; total 0.02375
    expected = 1500 * per_million("2.50") + 2000 * per_million("10")
    assert expected == Decimal("0.02375")
    assert response.status_code == 201
    body = response.json()
    assert body["cost"] == "0.023750000000"
    assert Decimal(body["cost"]) == expected
    assert body["currency"] == "USD"
    assert body["priced"] is True
    assert body["provider"] == "openai"
    assert body["model"] == "gpt-4o"
    assert body["price_id"] == str(global_price("openai", "gpt-4o").pk)
    assert body["budgets"] == []
    row = UsageEvent.objects.get(id=body["id"])
    assert row.organization_id == tenant_a.org.pk
    assert row.cost == expected
    assert (row.input_tokens, row.output_tokens) == (1500, 2000)
    assert row.api_key_id == tenant_a.key.pk


def test_dated_alias_is_priced_as_its_catalog_model(api):
    response = post(api, event("alias-1", model="gpt-4o-2024-08-06"))

    # Same gpt-4o prices: 1,500 x $2.50/M + 2,000 x $10/M = 0.00375 + 0.02 = 0.02375
    assert response.status_code == 201
    body = response.json()
    assert body["model"] == "gpt-4o"
    assert body["cost"] == "0.023750000000"
    assert body["price_id"] == str(global_price("openai", "gpt-4o").pk)
    row = UsageEvent.objects.get(id=body["id"])
    assert row.model == "gpt-4o"
    assert row.model_requested == "gpt-4o-2024-08-06"
    assert row.ai_model_id == AIModel.objects.get(slug="gpt-4o").pk


def test_whisper_is_priced_per_second_of_audio(api):
    response = post(
        api, event("whisper-1", model="whisper-1", operation="stt", usage={"audio_seconds": "330"})
    )

    # whisper-1: $0.006 per minute. 330 s = 5.5 min -> 5.5 x 0.006 = 0.033
    expected = Decimal("330") / 60 * Decimal("0.006")
    assert expected == Decimal("0.033")
    assert response.status_code == 201
    assert response.json()["cost"] == "0.033000000000"
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert row.audio_seconds == Decimal("330")
    assert row.operation == "stt"


def test_tts_hd_is_priced_per_character(api):
    response = post(api, event("tts-1", model="tts-1-hd", usage={"characters": 5000}))

    # tts-1-hd: $30 per 1M characters. 5,000 x 30/1e6 = 0.15
    expected = 5000 * per_million("30")
    assert expected == Decimal("0.15")
    assert response.status_code == 201
    assert response.json()["cost"] == "0.150000000000"
    assert UsageEvent.objects.get(id=response.json()["id"]).characters == 5000


def test_openai_chat_usage_object_bills_cached_prompt_tokens_at_the_cached_rate(api):
    raw = {
        "prompt_tokens": 1500,
        "completion_tokens": 100,
        "total_tokens": 1600,
        "prompt_tokens_details": {"cached_tokens": 1000, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
    }
    response = post(api, event("chat-raw", usage=raw))

    # gpt-4o: $2.50/M input, $1.25/M cached input, $10/M output.
    # uncached 500 x 2.50/1e6 = 0.00125 ; cached 1,000 x 1.25/1e6 = 0.00125 ;
    # output 100 x 10/1e6 = 0.001 ; total 0.0035
    expected = 500 * per_million("2.50") + 1000 * per_million("1.25") + 100 * per_million("10")
    assert expected == Decimal("0.0035")
    assert response.status_code == 201
    assert response.json()["cost"] == "0.003500000000"
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert (row.input_tokens, row.cached_input_tokens, row.output_tokens) == (1500, 1000, 100)


def test_anthropic_usage_object_bills_cache_reads_and_writes_at_their_rates(api):
    # Published claude-sonnet-4-5 prices (prompts up to 200k tokens): $3/M input,
    # $15/M output, $0.30/M cache read, $3.75/M cache write (5 minute).
    price = global_price("anthropic", "claude-sonnet-4-5")
    assert price.input_tokens == per_million("3")
    assert price.output_tokens == per_million("15")
    assert price.cached_input_tokens == per_million("0.30")
    assert price.cache_write_tokens == per_million("3.75")

    raw = {
        "input_tokens": 1000,
        "cache_read_input_tokens": 20000,
        "cache_creation_input_tokens": 5000,
        "output_tokens": 800,
        "service_tier": "standard",
    }
    response = post(
        api, event("anthropic-raw", provider="anthropic", model="claude-sonnet-4-5", usage=raw)
    )

    # uncached input 1,000 x 3/1e6 = 0.003 ; cache read 20,000 x 0.30/1e6 = 0.006 ;
    # cache write 5,000 x 3.75/1e6 = 0.01875 ; output 800 x 15/1e6 = 0.012
    # total 0.03975 (total input 26,000 stays below the 200k long-context tier)
    expected = (
        1000 * per_million("3")
        + 20000 * per_million("0.30")
        + 5000 * per_million("3.75")
        + 800 * per_million("15")
    )
    assert expected == Decimal("0.03975")
    assert response.status_code == 201
    body = response.json()
    assert body["cost"] == "0.039750000000"
    assert body["model"] == "claude-sonnet-4-5"
    row = UsageEvent.objects.get(id=body["id"])
    # Anthropic's input_tokens excludes the cache; the ledger's is the total.
    assert row.input_tokens == 26000
    assert row.cached_input_tokens == 20000
    assert row.cache_write_tokens == 5000
    assert row.output_tokens == 800


@pytest.mark.parametrize(
    ("input_tokens", "expected"),
    [
        # At the threshold, base rates: 200,000 x 1.25/1e6 = 0.25 ; 1,000 x 10/1e6 = 0.01
        (200_000, 200_000 * per_million("1.25") + 1000 * per_million("10")),
        # One token above: every token at the tier rate:
        # 200,001 x 2.50/1e6 = 0.5000025 ; 1,000 x 15/1e6 = 0.015
        (200_001, 200_001 * per_million("2.50") + 1000 * per_million("15")),
    ],
    ids=["200k-exactly-base-rate", "above-200k-all-at-tier-rate"],
)
def test_gemini_2_5_pro_long_prompts_are_billed_entirely_at_the_tier_rate(
    api, input_tokens, expected
):
    # Gemini 2.5 Pro: $1.25/M in, $10/M out for prompts <= 200k tokens;
    # $2.50/M in, $15/M out for prompts > 200k tokens.
    assert expected in (Decimal("0.26"), Decimal("0.5150025"))
    response = post(
        api,
        event(
            f"gemini-{input_tokens}",
            provider="google",
            model="gemini-2.5-pro",
            usage={"input_tokens": input_tokens, "output_tokens": 1000},
        ),
    )
    assert response.status_code == 201
    assert Decimal(response.json()["cost"]) == expected
    assert response.json()["cost"] == f"{expected:.12f}"


def test_gemini_usage_metadata_counts_thoughts_as_output_at_the_tier_rate(api):
    raw = {
        "usageMetadata": {
            "promptTokenCount": 250_000,
            "candidatesTokenCount": 2000,
            "thoughtsTokenCount": 500,
            "totalTokenCount": 252_500,
        }
    }
    response = post(api, event("gemini-raw", provider="google", model="gemini-2.5-pro", usage=raw))

    # > 200k prompt: $2.50/M in, $15/M out (thinking is billed as output).
    # 250,000 x 2.50/1e6 = 0.625 ; (2,000 + 500) x 15/1e6 = 0.0375 ; total 0.6625
    expected = 250_000 * per_million("2.50") + 2500 * per_million("15")
    assert expected == Decimal("0.6625")
    assert response.status_code == 201
    assert response.json()["cost"] == "0.662500000000"
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert (row.input_tokens, row.output_tokens) == (250_000, 2500)


def test_an_event_before_a_price_change_is_priced_at_the_old_price(api):
    old = global_price("openai", "gpt-4o")
    change = datetime(2026, 6, 1, tzinfo=UTC)
    new = copy_price(
        old, effective_from=change, input_tokens=per_million("5"), output_tokens=per_million("20")
    )

    before = post(api, event("before", occurred_at="2026-05-31T23:59:59Z"))
    at = post(api, event("at", occurred_at="2026-06-01T00:00:00Z"))
    after = post(api, event("after", occurred_at="2026-06-15T12:00:00+02:00"))

    # Old: 1,500 x 2.50/1e6 + 2,000 x 10/1e6 = 0.00375 + 0.02 = 0.02375
    # New: 1,500 x 5/1e6 + 2,000 x 20/1e6 = 0.0075 + 0.04 = 0.0475
    assert 1500 * per_million("5") + 2000 * per_million("20") == Decimal("0.0475")
    assert before.json()["cost"] == "0.023750000000"
    assert before.json()["price_id"] == str(old.pk)
    assert at.json()["cost"] == "0.047500000000"
    assert at.json()["price_id"] == str(new.pk)
    assert after.json()["cost"] == "0.047500000000"
    assert after.json()["price_id"] == str(new.pk)


def test_tenant_override_beats_the_global_price_only_for_that_tenant(catalog, tenant_a, tenant_b):
    glob = global_price("openai", "gpt-4o")
    override = copy_price(
        glob,
        organization=tenant_a.org,
        input_tokens=per_million("1"),
        output_tokens=per_million("4"),
    )

    a = post(tenant_a.client(), event("override"))
    b = post(tenant_b.client(), event("override"))

    # Acme's negotiated rate: 1,500 x 1/1e6 + 2,000 x 4/1e6 = 0.0015 + 0.008 = 0.0095
    assert 1500 * per_million("1") + 2000 * per_million("4") == Decimal("0.0095")
    assert a.status_code == 201
    assert a.json()["cost"] == "0.009500000000"
    assert a.json()["price_id"] == str(override.pk)
    # Globex pays list price: 0.00375 + 0.02 = 0.02375
    assert b.status_code == 201
    assert b.json()["cost"] == "0.023750000000"
    assert b.json()["price_id"] == str(glob.pk)


def test_tenant_override_does_not_apply_before_it_starts(api, tenant_a):
    glob = global_price("openai", "gpt-4o")
    copy_price(
        glob,
        organization=tenant_a.org,
        effective_from=datetime(2026, 7, 1, tzinfo=UTC),
        input_tokens=per_million("1"),
        output_tokens=per_million("4"),
    )

    response = post(api, event("early", occurred_at="2026-06-30T23:00:00Z"))

    # Before the override starts: list price 0.00375 + 0.02 = 0.02375
    assert response.json()["cost"] == "0.023750000000"
    assert response.json()["price_id"] == str(glob.pk)


@pytest.mark.parametrize(
    ("provider", "model"),
    [("openai", "gpt-99-imaginary"), ("acme-ai", "mystery-1")],
    ids=["unknown-model-known-provider", "unknown-provider"],
)
def test_unknown_model_is_recorded_unpriced_at_zero(api, provider, model):
    response = post(api, event(f"unknown-{provider}", provider=provider, model=model))

    assert response.status_code == 201
    body = response.json()
    assert body["priced"] is False
    assert body["cost"] == "0.000000000000"
    assert body["price_id"] is None
    assert body["model"] == model
    row = UsageEvent.objects.get(id=body["id"])
    assert row.priced is False
    assert row.cost == Decimal(0)
    assert row.price_id is None
    assert row.input_tokens == 1500


def test_cost_sent_for_an_unpriced_model_is_used(api):
    response = post(
        api,
        {
            "idempotency_key": "client-priced",
            "provider": "acme-ai",
            "model": "mystery-1",
            "cost": "0.0123",
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert body["priced"] is True
    assert body["price_id"] is None
    assert body["cost"] == "0.012300000000"
    row = UsageEvent.objects.get(id=body["id"])
    assert row.cost == Decimal("0.0123")
    assert row.client_cost == Decimal("0.0123")


def test_catalog_price_wins_over_a_client_cost_unless_the_org_trusts_clients(api, tenant_a):
    catalog_wins = post(api, event("client-cost-1", cost="9.99"))
    # Catalog: 0.00375 + 0.02 = 0.02375, not the client's 9.99
    assert catalog_wins.json()["cost"] == "0.023750000000"
    assert catalog_wins.json()["price_id"] == str(global_price("openai", "gpt-4o").pk)

    tenant_a.org.allow_client_pricing = True
    tenant_a.org.save()
    client_wins = post(api, event("client-cost-2", cost="9.99"))
    assert client_wins.json()["cost"] == "9.990000000000"
    assert client_wins.json()["priced"] is True
    assert client_wins.json()["price_id"] is None


def test_tags_revenue_operation_and_occurred_at_are_stored(api):
    response = post(
        api,
        event(
            "stored-fields",
            operation="chat",
            tags={"video_id": "v-1", "session_id": "s-9"},
            revenue="0.10",
            occurred_at="2026-11-22T10:00:00+01:00",
        ),
    )

    assert response.status_code == 201
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert row.tags == {"video_id": "v-1", "session_id": "s-9"}
    assert row.revenue == Decimal("0.10")
    assert row.operation == "chat"
    assert row.occurred_at == datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def test_occurred_at_defaults_to_now(api):
    start = datetime.now(UTC)
    response = post(api, event("no-time"))
    end = datetime.now(UTC)

    row = UsageEvent.objects.get(id=response.json()["id"])
    assert start - timedelta(seconds=1) <= row.occurred_at <= end + timedelta(seconds=1)
    assert row.operation == "default"


@pytest.mark.parametrize(
    ("occurred_at", "accepted"),
    [
        ("2000-01-01T00:30:00+01:00", False),  # 1999-12-31T23:30Z
        ("2000-01-01T00:00:00Z", True),
        ("2999-12-31T23:30:00-01:00", False),  # 3000-01-01T00:30Z
        ("2999-12-31T23:59:59Z", True),
    ],
)
def test_occurred_at_must_fall_in_the_years_2000_to_2999_in_utc(api, occurred_at, accepted):
    # Budgets that never reset count exactly that span: an event outside it
    # would be charged to them and missing from their ledger sum.
    response = post(api, event("edge", occurred_at=occurred_at))
    assert response.status_code == (201 if accepted else 400), response.content
    if not accepted:
        assert "occurred_at" in response.json()["details"]
        assert not UsageEvent.objects.exists()


# -- idempotency -----------------------------------------------------------------------


def test_identical_replay_answers_200_with_the_first_result(api):
    first = post(api, event("replay-1", profile="user-42", tags={"a": "b"}))
    second = post(api, event("replay-1", profile="user-42", tags={"a": "b"}))

    assert first.status_code == 201
    assert second.status_code == 200
    assert second.json() == first.json()
    assert UsageEvent.objects.filter(idempotency_key="replay-1").count() == 1


def test_replay_with_keys_in_another_order_is_still_a_replay(api):
    body = event("reorder", profile="user-42", tags={"x": "1", "y": "2"})
    reordered = {k: body[k] for k in reversed(list(body))}
    reordered["usage"] = {"output_tokens": 2000, "input_tokens": 1500}
    reordered["tags"] = {"y": "2", "x": "1"}
    assert json.dumps(reordered) != json.dumps(body)

    first = post(api, body)
    second = client_post_raw(api, json.dumps(reordered))

    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["id"] == first.json()["id"]
    assert UsageEvent.objects.count() == 1


def test_same_key_with_a_different_body_is_a_409_and_writes_nothing(api):
    first = post(api, event("conflict", profile="user-42"))
    before = counts()
    rollup_before = list(DailyUsage.objects.values_list("cost", "input_tokens", "events"))

    conflict = post(
        api, event("conflict", profile="user-42", usage={"input_tokens": 1, "output_tokens": 1})
    )

    assert conflict.status_code == 409
    body = conflict.json()
    assert body["error"] == "idempotency_conflict"
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    assert counts() == before
    assert list(DailyUsage.objects.values_list("cost", "input_tokens", "events")) == rollup_before
    row = UsageEvent.objects.get(idempotency_key="conflict")
    assert str(row.id) == first.json()["id"]
    assert row.input_tokens == 1500


def test_conflicting_reuse_naming_a_new_profile_creates_no_profile(api, tenant_a):
    post(api, event("conflict-profile", profile="user-42"))
    before = counts()

    conflict = post(api, event("conflict-profile", profile="someone-new"))

    assert conflict.status_code == 409
    # A refused request leaves nothing behind, not even the profile it named.
    assert not Profile.objects.filter(organization=tenant_a.org, external_id="someone-new").exists()
    assert counts() == before


def test_replay_after_a_price_change_still_answers_the_recorded_cost(api):
    first = post(api, event("replay-price", occurred_at="2026-03-01T00:00:00Z"))
    old = global_price("openai", "gpt-4o")
    copy_price(
        old,
        effective_from=datetime(2026, 2, 1, tzinfo=UTC),
        input_tokens=per_million("100"),
    )

    replay = post(api, event("replay-price", occurred_at="2026-03-01T00:00:00Z"))

    assert replay.status_code == 200
    # Recorded at 0.00375 + 0.02 = 0.02375, and so it stays.
    assert replay.json()["cost"] == first.json()["cost"] == "0.023750000000"


def test_the_same_key_in_two_organizations_is_two_events(catalog, tenant_a, tenant_b):
    a = post(tenant_a.client(), event("shared-key"))
    b = post(tenant_b.client(), event("shared-key"))

    assert (a.status_code, b.status_code) == (201, 201)
    assert a.json()["id"] != b.json()["id"]
    rows = UsageEvent.objects.filter(idempotency_key="shared-key")
    assert {r.organization_id for r in rows} == {tenant_a.org.pk, tenant_b.org.pk}


def test_batch_event_repeated_inside_one_batch_is_201_then_200(api):
    response = post(api, {"events": [event("dup"), event("other"), event("dup")]}, BATCH_URL)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 201), (2, 200)]
    assert results[2]["id"] == results[0]["id"]
    assert UsageEvent.objects.filter(idempotency_key="dup").count() == 1
    assert UsageEvent.objects.count() == 2


def test_batch_same_key_with_different_bodies_is_201_then_409(api):
    changed = event("dup", usage={"input_tokens": 7})
    response = post(api, {"events": [event("dup"), changed]}, BATCH_URL)

    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 409]
    assert results[1]["error"] == "idempotency_conflict"
    assert UsageEvent.objects.get(idempotency_key="dup").input_tokens == 1500


def test_batch_replayed_whole_answers_200_for_every_event(api):
    events = [event(f"b-{i}", usage={"input_tokens": i + 1}) for i in range(5)]
    first = post(api, {"events": events}, BATCH_URL).json()["results"]
    second = post(api, {"events": events}, BATCH_URL).json()["results"]

    assert [r["status"] for r in first] == [201] * 5
    assert [r["status"] for r in second] == [200] * 5
    assert [r["id"] for r in second] == [r["id"] for r in first]
    assert UsageEvent.objects.count() == 5


def test_a_large_batch_with_some_keys_recorded_before_charges_only_its_new_events(api, tenant_a):
    """More than FEW_ROWS events (the database sums what they add as it
    inserts them): replays, a key repeated in the batch and a reused key
    add nothing; the new events' rollups and budget charges are exact."""
    cost, calls = _spend_budgets(tenant_a.org)
    before = [event(f"old-{i}", usage={"input_tokens": 1000 * (i + 1)}) for i in range(3)]
    assert [r["status"] for r in post(api, {"events": before}, BATCH_URL).json()["results"]] == [
        201
    ] * 3
    spent_before, calls_before = _spent(cost), _spent(calls)
    new = [
        event(f"new-{i}", profile=f"p{i % 2}", usage={"input_tokens": 100, "output_tokens": i})
        for i in range(10)
    ]
    reused = event("old-0", usage={"input_tokens": 7})
    events = [*before, new[0], *new, reused]
    results = post(api, {"events": events}, BATCH_URL).json()["results"]

    statuses = [r["status"] for r in results]
    assert statuses == [200, 200, 200, 201, 200, *[201] * 9, 409], statuses
    recorded = UsageEvent.objects.filter(
        organization=tenant_a.org, idempotency_key__startswith="new-"
    )
    assert recorded.count() == 10
    added = sum((e.cost for e in recorded), Decimal(0))
    assert added > 0
    assert _spent(cost) == spent_before + added
    assert _spent(calls) == calls_before + 10
    assert rollups_grouped(tenant_a.org) == ledger_grouped(tenant_a.org)
    by_key = {r["id"]: r for r in results if r["status"] == 201}
    assert set(by_key) == {str(e.pk) for e in recorded}

    # Sent again whole: nothing goes in, nothing is added.
    again = post(api, {"events": events}, BATCH_URL).json()["results"]
    assert [r["status"] for r in again] == [200] * 14 + [409]
    assert [r["id"] for r in again[:-1]] == [r["id"] for r in results[:-1]]
    assert (_spent(cost), _spent(calls)) == (spent_before + added, calls_before + 10)
    assert rollups_grouped(tenant_a.org) == ledger_grouped(tenant_a.org)


def test_batch_events_get_distinct_time_ordered_version_7_ids(api, tenant_a):
    events = [event(f"id-{i:03d}", usage={"input_tokens": i + 1}) for i in range(300)]
    before = datetime.now(UTC)
    results = post(api, {"events": events}, BATCH_URL).json()["results"]
    after = datetime.now(UTC)

    ids = [uuid.UUID(r["id"]) for r in results]
    assert len(set(ids)) == 300
    assert {i.version for i in ids} == {7}
    assert {i.variant for i in ids} == {uuid.RFC_4122}
    # The first 48 bits are the Unix time in milliseconds of the request.
    stamps = {datetime.fromtimestamp((i.int >> 80) / 1000, UTC) for i in ids}
    assert len(stamps) == 1
    (stamp,) = stamps
    assert before - timedelta(milliseconds=1) <= stamp <= after
    # In the order the events were sent, each with 62 random bits of its own.
    assert ids == sorted(ids)
    assert len({i.int & ((1 << 62) - 1) for i in ids}) == 300
    assert set(UsageEvent.objects.values_list("id", flat=True)) == set(ids)
    # What every row of a request shares: its tenant, its key, its arrival.
    shared = set(UsageEvent.objects.values_list("organization_id", "api_key_id", "received_at"))
    assert len(shared) == 1
    ((org_id, key_id, received_at),) = shared
    assert (org_id, key_id) == (tenant_a.org.pk, tenant_a.key.pk)
    assert before <= received_at <= datetime.now(UTC)
    # Sent without a time, they all happened when the batch arrived.
    (occurred_at,) = set(UsageEvent.objects.values_list("occurred_at", flat=True))
    assert before <= occurred_at <= received_at


def test_batch_answers_are_plain_json_that_orjson_writes_itself(api, tenant_a):
    # Anything not plain would hand the answer back to DRF's slower encoder.
    budget_create(
        org=tenant_a.org, name="Spend", metric=Budget.Metric.COST, period=Budget.Period.MONTHLY,
        limit=Decimal("100"), thresholds=[50, 80],
    )  # fmt: skip
    events = [event("plain-0"), event("plain-1", usage={"input_tokens": -1}), event("plain-0")]
    response = post(api, {"events": events}, BATCH_URL)

    assert [r["status"] for r in response.json()["results"]] == [201, 400, 200]
    assert response.json()["results"][0]["budgets"][0]["name"] == "Spend"
    assert orjson.dumps(response.data, default=_not_plain, option=_PLAIN_ONLY) == response.content


def _spend_budgets(org) -> tuple[Budget, Budget]:
    cost = budget_create(
        org=org, name="Spend", metric="cost", period="monthly", limit=Decimal("100")
    )
    calls = budget_create(
        org=org, name="Calls", metric="requests", period="daily", action="warn",
        limit=Decimal("1000"),
    )  # fmt: skip
    return cost, calls


def _spent(budget: Budget) -> Decimal:
    return BudgetPeriod.objects.get(budget=budget, start__lte=datetime.now(UTC),
                                    end__gt=datetime.now(UTC)).spent  # fmt: skip


def test_one_event_its_rollup_and_its_budgets_are_written_by_one_statement(api, tenant_a):
    cost, calls = _spend_budgets(tenant_a.org)
    model_resolve(provider="openai", model="gpt-4o")  # the catalog's name index, built once

    with CaptureQueriesContext(connection) as captured:
        response = post(api, event("one", profile="alice-app-user"))

    assert response.status_code == 201
    writes = [
        q["sql"]
        for q in captured.captured_queries
        if q["sql"].lstrip().upper().startswith(("INSERT", "UPDATE", "WITH", "SAVEPOINT"))
        and "last_used_at" not in q["sql"]  # the key's first-use stamp
    ]
    assert len(writes) == 1, writes
    # Besides the key's first-use stamp: the key, one read (prices, profile,
    # budgets) and the write.
    statements = [
        q["sql"] for q in captured.captured_queries if not q["sql"].lstrip().startswith("UPDATE")
    ]
    assert len(statements) == 3, statements
    # Within the driver's parsed-statement cache, or it is parsed on every call.
    assert len(writes[0].encode()) <= MAX_CACHED_STATEMENT_LENGTH
    assert writes[0].count("%s") <= MAX_CACHED_STATEMENT_PARAMS
    # 1,500 x $2.50/M + 2,000 x $10/M = 0.00375 + 0.02 = 0.02375
    assert _spent(cost) == Decimal("0.02375")
    assert _spent(calls) == 1
    rollup = DailyUsage.objects.get(organization=tenant_a.org)
    assert (rollup.events, rollup.cost, rollup.profile_id) == (
        1, Decimal("0.02375"), tenant_a.profile.pk
    )  # fmt: skip
    body = response.json()
    assert {b["name"]: b["spent"] for b in body["budgets"]} == {
        "Spend": "0.023750000000",
        "Calls": "1",
    }


def test_a_small_batch_reads_ahead_once_and_charges_profile_budgets_by_name(api, tenant_a):
    org = tenant_a.org
    known = Profile.objects.create(organization=org, external_id="known")
    for_known = budget_create(org=org, name="Known", metric="requests", limit=Decimal(100),
                              profile=known)  # fmt: skip
    shared = budget_create(org=org, name="Shared", metric="requests", limit=Decimal(100))
    model_resolve(provider="openai", model="gpt-4o")  # the catalog's name index, built once
    events = [
        event("s1", profile="known"),
        event("s2", profile="brand-new"),
        event("s3", profile="known", model="gpt-4o-mini"),
        event("s4"),
    ]

    with CaptureQueriesContext(connection) as captured:
        response = post(api, {"events": events}, BATCH_URL)

    assert [r["status"] for r in response.json()["results"]] == [201] * 4
    assert _spent(for_known) == 2
    assert _spent(shared) == 4
    new = Profile.objects.get(organization=org, external_id="brand-new")
    assert UsageEvent.objects.filter(profile=new).count() == 1
    # One read before the transaction: prices, profiles and budgets together.
    selects = [q["sql"] for q in captured.captured_queries if q["sql"].startswith("SELECT")]
    assert sum("FULL JOIN" in q for q in selects) == 1
    assert sum("costs_price" in q for q in selects) == 1, selects  # prices read once
    assert sum("quotas_budget " in q for q in selects) == 1, selects  # budgets read once


def test_a_replayed_single_event_writes_nothing_and_shows_the_budgets_once_charged(api, tenant_a):
    cost, calls = _spend_budgets(tenant_a.org)
    first = post(api, event("again"))
    second = post(api, event("again"))
    conflict = post(api, event("again", usage={"input_tokens": 1}))

    assert (first.status_code, second.status_code, conflict.status_code) == (201, 200, 409)
    assert second.json()["id"] == first.json()["id"]
    assert _spent(cost) == Decimal("0.02375")
    assert _spent(calls) == 1
    assert DailyUsage.objects.get(organization=tenant_a.org).events == 1
    assert {b["name"]: b["spent"] for b in second.json()["budgets"]} == {
        "Spend": "0.023750000000",
        "Calls": "1",
    }


def test_a_single_event_in_a_period_not_open_yet_is_charged_there_once(api, tenant_a):
    cost, _ = _spend_budgets(tenant_a.org)
    last_month = (datetime.now(UTC).replace(day=1) - timedelta(days=3)).replace(hour=12)

    response = post(api, event("late", occurred_at=last_month.isoformat()))

    assert response.status_code == 201
    period = BudgetPeriod.objects.get(budget=cost, start__lte=last_month, end__gt=last_month)
    assert period.spent == Decimal("0.02375")
    assert _spent(cost) == 0
    assert DailyUsage.objects.get(organization=tenant_a.org).events == 1


def test_batch_with_one_bad_event_records_exactly_the_good_ones(api):
    events = [
        event("good-0"),
        event("bad-1", usage={"input_tokens": -3}),
        event("good-2", model="tts-1", usage={"characters": 1000}),
    ]
    response = post(api, {"events": events}, BATCH_URL)

    assert response.status_code == 200
    results = response.json()["results"]
    assert [(r["index"], r["status"]) for r in results] == [(0, 201), (1, 400), (2, 201)]
    assert results[1]["error"] == "invalid"
    assert "usage.input_tokens" in results[1]["details"]
    # tts-1: $15/M characters -> 1,000 x 15/1e6 = 0.015
    assert results[2]["cost"] == "0.015000000000"
    assert set(UsageEvent.objects.values_list("idempotency_key", flat=True)) == {
        "good-0",
        "good-2",
    }


def test_batch_event_that_is_not_an_object_gets_its_own_400(api):
    response = post(api, {"events": [event("good-0"), 42, event("good-2")]}, BATCH_URL)

    # The contract: "each event is judged alone (one bad event gets its own 400 entry;
    # the rest are recorded)".
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 400, 201]
    assert set(UsageEvent.objects.values_list("idempotency_key", flat=True)) == {
        "good-0",
        "good-2",
    }


# -- rollups ---------------------------------------------------------------------------


ROLLUP_KEYS = ("day", "profile_id", "provider", "model", "operation")
ROLLUP_SUMS = ("cost", "revenue", *METERS)


def ledger_grouped(org) -> dict[tuple, dict]:
    rows = (
        UsageEvent.objects.filter(organization=org)
        .values(*ROLLUP_KEYS)
        .annotate(
            **{f"s_{c}": Sum(c) for c in ROLLUP_SUMS},
            s_events=Count("id"),
            s_unpriced_events=Count("id", filter=Q(priced=False)),
        )
    )
    return {
        tuple(r[k] for k in ROLLUP_KEYS): {
            c: r[f"s_{c}"] or 0 for c in (*ROLLUP_SUMS, "events", "unpriced_events")
        }
        for r in rows
    }


def rollups_grouped(org) -> dict[tuple, dict]:
    rows = DailyUsage.objects.filter(organization=org).values(
        *ROLLUP_KEYS, *ROLLUP_SUMS, "events", "unpriced_events"
    )
    grouped = {}
    for r in rows:
        key = tuple(r[k] for k in ROLLUP_KEYS)
        assert key not in grouped, f"two rollup rows for {key}"
        grouped[key] = {c: r[c] for c in (*ROLLUP_SUMS, "events", "unpriced_events")}
    return grouped


def test_daily_rollups_equal_the_ledger_grouped_the_same_way(catalog, tenant_a, tenant_b):
    a, b = tenant_a.client(), tenant_b.client()
    mix = [
        (a, event("m1", profile="p1", occurred_at="2026-11-20T10:00:00Z")),
        (a, event("m2", profile="p1", occurred_at="2026-11-20T23:59:59Z", revenue="0.05")),
        (a, event("m3", profile="p2", occurred_at="2026-11-20T12:00:00Z", tags={"k": "v"})),
        (a, event("m4", occurred_at="2026-11-20T12:00:00Z")),  # no profile
        (a, event("m5", occurred_at="2026-11-20T13:00:00Z", revenue="1.25")),  # no profile
        (a, event("m6", profile="p1", occurred_at="2026-11-21T00:00:00Z")),  # next day
        (a, event("m7", profile="p1", operation="chat", occurred_at="2026-11-20T11:00:00Z")),
        (
            a,
            event(
                "m8",
                profile="p1",
                model="gpt-4o-mini",
                usage={"input_tokens": 333, "output_tokens": 77},
                occurred_at="2026-11-20T11:00:00Z",
            ),
        ),
        (
            a,
            event(
                "m9",
                profile="p2",
                provider="anthropic",
                model="claude-sonnet-4-5",
                usage={"input_tokens": 10, "cache_read_input_tokens": 90, "output_tokens": 5},
                occurred_at="2026-11-20T09:00:00Z",
            ),
        ),
        (
            a,
            event(
                "m10",
                model="whisper-1",
                usage={"audio_seconds": "12.345"},
                occurred_at="2026-11-20T09:00:00Z",
            ),
        ),
        (a, event("m11", model="not-in-catalog", occurred_at="2026-11-20T09:00:00Z")),
        (a, event("m12", model="not-in-catalog", occurred_at="2026-11-20T09:30:00Z")),
        (
            a,
            {
                "idempotency_key": "m13",
                "provider": "acme-ai",
                "model": "mystery-1",
                "cost": "0.000000000001",
                "occurred_at": "2026-11-20T09:00:00Z",
            },
        ),
        (
            a,
            event("m14", profile="p1", model="gpt-4o-2024-11-20", occurred_at="2026-11-20T18:00Z"),
        ),
        (b, event("m1", profile="p1", occurred_at="2026-11-20T14:59:59Z")),  # Tokyo 23:59:59
        (b, event("m2", profile="p1", occurred_at="2026-11-20T15:00:00Z")),  # Tokyo next day
        (b, event("m3", occurred_at="2026-11-20T16:00:00Z")),
        (
            b,
            event(
                "m4",
                model="tts-1",
                operation="tts",
                usage={"characters": 1234, "requests": 2},
                occurred_at="2026-11-20T09:00:00Z",
            ),
        ),
        (
            b,
            event(
                "m5",
                model="dall-e-3",
                operation="image",
                usage={"images": 3},
                occurred_at="2026-11-20T09:00:00Z",
            ),
        ),
    ]
    for client, body in mix:
        assert post(client, body).status_code == 201
    # A replay and a conflict must not move any rollup.
    assert post(a, mix[0][1]).status_code == 200
    assert post(a, event("m1", profile="p9")).status_code == 409

    for tenant in (tenant_a, tenant_b):
        ledger = ledger_grouped(tenant.org)
        rollups = rollups_grouped(tenant.org)
        assert rollups == ledger
        total = sum(row["events"] for row in rollups.values())
        assert total == UsageEvent.objects.filter(organization=tenant.org).count()

    # Hand-checked total for Acme.
    # 7 plain gpt-4o events (m1 m2 m3 m4 m5 m6 m7) + m14 (alias): 8 x 0.02375 = 0.19
    # m8 gpt-4o-mini ($0.15/M in, $0.60/M out): 333 x 0.15/1e6 + 77 x 0.60/1e6
    #    = 0.00004995 + 0.0000462 = 0.00009615
    # m9 claude ($3/M in, $0.30/M cache read, $15/M out): 10 x 3/1e6 + 90 x 0.30/1e6
    #    + 5 x 15/1e6 = 0.00003 + 0.000027 + 0.000075 = 0.000132
    # m10 whisper ($0.006/min = $0.0001/s): 12.345 x 0.0001 = 0.0012345
    # m11, m12 unpriced: 0 ; m13 client cost 0.000000000001
    # 0.19 + 0.00009615 + 0.000132 + 0.0012345 + 0.000000000001 = 0.191462650001
    expected_total = (
        8 * (1500 * per_million("2.50") + 2000 * per_million("10"))
        + 333 * per_million("0.15")
        + 77 * per_million("0.60")
        + 10 * per_million("3")
        + 90 * per_million("0.30")
        + 5 * per_million("15")
        + Decimal("12.345") * Decimal("0.006") / 60
        + Decimal("0.000000000001")
    )
    assert expected_total == Decimal("0.191462650001")
    acme_rollup = DailyUsage.objects.filter(organization=tenant_a.org)
    assert acme_rollup.aggregate(s=Sum("cost"))["s"] == expected_total
    assert acme_rollup.aggregate(s=Sum("unpriced_events"))["s"] == 2
    assert acme_rollup.aggregate(s=Sum("revenue"))["s"] == Decimal("1.30")
    assert acme_rollup.aggregate(s=Sum("events"))["s"] == 14
    no_profile = acme_rollup.filter(profile__isnull=True, day=date(2026, 11, 20), model="gpt-4o")
    assert [(r.events, r.input_tokens, r.output_tokens) for r in no_profile] == [(2, 3000, 4000)]


@pytest.mark.parametrize("via", ["service", "admin"])
def test_deleting_a_profile_folds_its_rollups_into_the_rows_without_one(
    catalog, tenant_a, tenant_b, alice, via
):
    from django.test import Client
    from django.urls import reverse

    from costs.services.profiles import profiles_delete

    a, b = tenant_a.client(), tenant_b.client()
    for client, body in [
        (a, event("d1", profile="p1", occurred_at="2026-11-20T10:00:00Z")),
        (a, event("d2", profile="p1", occurred_at="2026-11-20T11:00:00Z", revenue="0.05")),
        (a, event("d3", profile="p2", occurred_at="2026-11-20T10:00:00Z")),
        (a, event("d4", occurred_at="2026-11-20T12:00:00Z")),  # the row p1's joins
        (a, event("d5", profile="p1", model="gpt-4o-mini", occurred_at="2026-11-21T10:00:00Z")),
        (b, event("d1", profile="p1", occurred_at="2026-11-20T10:00:00Z")),
    ]:
        assert post(client, body).status_code == 201
    p1 = Profile.objects.get(organization=tenant_a.org, external_id="p1")
    if via == "service":
        assert profiles_delete(profiles=[p1]) == 1
    else:
        admin = Client()
        admin.force_login(alice)
        url = reverse("admin:profiles_profile_delete", args=[p1.pk])
        assert admin.post(url, {"post": "yes"}).status_code == 302
    assert not Profile.objects.filter(pk=p1.pk).exists()
    assert UsageEvent.objects.filter(organization=tenant_a.org, profile__isnull=True).count() == 4
    for tenant in (tenant_a, tenant_b):
        assert rollups_grouped(tenant.org) == ledger_grouped(tenant.org)
    folded = DailyUsage.objects.get(
        organization=tenant_a.org, profile__isnull=True, day=date(2026, 11, 20), model="gpt-4o"
    )
    assert (folded.events, folded.revenue) == (3, Decimal("0.05"))
    assert DailyUsage.objects.filter(organization=tenant_b.org, profile__isnull=False).count() == 1


def test_rollup_day_is_the_local_date_in_the_org_timezone(catalog, tenant_a, tenant_b):
    instant = "2026-11-21T16:30:00Z"  # 2026-11-22 01:30 in Tokyo
    a = post(tenant_a.client(), event("tz", occurred_at=instant))
    b = post(tenant_b.client(), event("tz", occurred_at=instant))

    assert UsageEvent.objects.get(id=a.json()["id"]).day == date(2026, 11, 21)
    assert UsageEvent.objects.get(id=b.json()["id"]).day == date(2026, 11, 22)
    assert list(
        DailyUsage.objects.filter(organization=tenant_b.org).values_list("day", flat=True)
    ) == [date(2026, 11, 22)]
    assert list(
        DailyUsage.objects.filter(organization=tenant_a.org).values_list("day", flat=True)
    ) == [date(2026, 11, 21)]


# -- profiles and keys -----------------------------------------------------------------


def test_an_unknown_profile_named_by_a_write_is_created(api, tenant_a):
    assert not Profile.objects.filter(external_id="brand-new").exists()

    response = post(api, event("new-profile", profile="brand-new"))

    assert response.status_code == 201
    profile = Profile.objects.get(organization=tenant_a.org, external_id="brand-new")
    assert UsageEvent.objects.get(id=response.json()["id"]).profile_id == profile.pk


def test_a_known_profile_is_reused_not_duplicated(api, tenant_a):
    before = Profile.objects.count()
    response = post(api, event("known-profile", profile=tenant_a.profile.external_id))

    assert response.status_code == 201
    assert Profile.objects.count() == before
    assert UsageEvent.objects.get(id=response.json()["id"]).profile_id == tenant_a.profile.pk


def test_a_profile_named_by_another_tenant_is_a_different_profile(catalog, tenant_a, tenant_b):
    response = post(tenant_b.client(), event("cross", profile=tenant_a.profile.external_id))

    assert response.status_code == 201
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert row.profile_id != tenant_a.profile.pk
    assert row.profile.organization_id == tenant_b.org.pk


def test_a_profile_bound_key_recording_for_another_profile_is_403_and_writes_nothing(
    catalog, tenant_a
):
    _, secret = make_key(tenant_a.org, scopes="ingest", profile=tenant_a.profile)
    client = tenant_a.client(secret)
    before = counts()

    response = post(client, event("bound-other", profile="someone-else"))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert counts() == before
    assert not Profile.objects.filter(external_id="someone-else").exists()


def test_a_profile_bound_key_in_a_batch_gets_403_for_the_foreign_event_only(catalog, tenant_a):
    _, secret = make_key(tenant_a.org, scopes="ingest", profile=tenant_a.profile)
    events = [event("bound-0"), event("bound-1", profile="someone-else")]
    response = post(tenant_a.client(secret), {"events": events}, BATCH_URL)

    results = response.json()["results"]
    assert [r["status"] for r in results] == [201, 403]
    assert results[1]["error"] == "forbidden"
    assert list(UsageEvent.objects.values_list("idempotency_key", flat=True)) == ["bound-0"]


@pytest.mark.parametrize("named", [False, True], ids=["profile-omitted", "own-profile-named"])
def test_a_profile_bound_key_records_for_its_own_profile(catalog, tenant_a, named):
    _, secret = make_key(tenant_a.org, scopes="ingest", profile=tenant_a.profile)
    body = event("bound-self")
    if named:
        body["profile"] = tenant_a.profile.external_id

    response = post(tenant_a.client(secret), body)

    assert response.status_code == 201
    row = UsageEvent.objects.get(id=response.json()["id"])
    assert row.profile_id == tenant_a.profile.pk
    day = DailyUsage.objects.get(organization=tenant_a.org)
    assert day.profile_id == tenant_a.profile.pk


@pytest.mark.parametrize("scopes", ["read", "check", "read,check,manage"])
def test_a_key_without_the_ingest_scope_is_403(catalog, tenant_a, scopes):
    _, secret = make_key(tenant_a.org, scopes=scopes)
    client = tenant_a.client(secret)
    before = counts()

    single = post(client, event("no-scope"))
    batch = post(client, {"events": [event("no-scope")]}, BATCH_URL)

    for response in (single, batch):
        assert response.status_code == 403
        assert response.json()["error"] == "forbidden"
    assert counts() == before


def test_a_missing_or_bad_key_is_401(catalog, tenant_a):
    from rest_framework.test import APIClient

    anonymous = post(APIClient(), event("anon"))
    wrong = post(tenant_a.client("sk_nope_" + uuid.uuid4().hex), event("anon"))

    for response in (anonymous, wrong):
        assert response.status_code == 401
        assert response.json()["error"] == "unauthenticated"
    assert UsageEvent.objects.count() == 0

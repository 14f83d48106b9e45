"""Bad input to POST /api/v1/usage and /api/v1/usage/batch: a 400 with the contract's
error body naming the field, nothing written, and never a 500."""

from __future__ import annotations

import json
import random
import uuid

import pytest

from costs.models import DailyUsage, UsageEvent
from profiles.models import Profile

USAGE_URL = "/api/v1/usage"
BATCH_URL = "/api/v1/usage/batch"


class Raw:
    """A JSON token written verbatim (numbers with a fraction, exponents, ...), so the
    tests never build a Python float."""

    def __init__(self, text: str) -> None:
        self.text = text


def dumps(body) -> str:
    """json.dumps that writes ``Raw`` values verbatim."""
    raws: dict[str, str] = {}

    def default(value):
        if isinstance(value, Raw):
            marker = f"__raw_{uuid.uuid4().hex}__"
            raws[marker] = value.text
            return marker
        raise TypeError(type(value))

    text = json.dumps(body, default=default)
    for marker, raw in raws.items():
        text = text.replace(f'"{marker}"', raw)
    return text


def post(client, body, url: str = USAGE_URL):
    data = body if isinstance(body, str | bytes) else dumps(body)
    return client.post(url, data=data, content_type="application/json")


def valid(**fields) -> dict:
    body = {
        "idempotency_key": "bad-input-1",
        "profile": "brand-new-profile",
        "provider": "openai",
        "model": "gpt-4o",
        "usage": {"input_tokens": 1500, "output_tokens": 2000},
    }
    body.update(fields)
    return body


def without(*names: str) -> dict:
    body = valid()
    for name in names:
        del body[name]
    return body


def counts() -> tuple[int, int, int]:
    return UsageEvent.objects.count(), DailyUsage.objects.count(), Profile.objects.count()


def assert_contract_error(response, status: int = 400, code: str = "invalid") -> dict:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    assert body["error"] == code
    assert isinstance(body["message"], str) and body["message"]
    assert isinstance(body["details"], dict)
    return body


@pytest.fixture
def api(tenant_a, catalog):
    return tenant_a.client()


def test_the_valid_base_body_is_accepted(api):
    # Guards the cases below: each differs from this accepted body in one field only.
    assert post(api, valid()).status_code == 201


BAD_EVENTS = [
    pytest.param(valid(usage={"input_tokens": -1}), "usage.input_tokens", id="negative-tokens"),
    pytest.param(
        valid(usage={"audio_seconds": "-5"}), "usage.audio_seconds", id="negative-audio-seconds"
    ),
    pytest.param(valid(cost="-0.01"), "cost", id="negative-cost"),
    pytest.param(
        valid(usage={"input_tokens": Raw("1.5")}), "usage.input_tokens", id="fractional-tokens"
    ),
    pytest.param(
        valid(usage={"input_tokens": Raw("1.0")}), "usage.input_tokens", id="tokens-as-1.0"
    ),
    pytest.param(
        valid(usage={"input_tokens": "1500"}), "usage.input_tokens", id="tokens-as-string"
    ),
    pytest.param(valid(usage={"input_tokens": True}), "usage.input_tokens", id="tokens-as-boolean"),
    pytest.param(
        valid(model="whisper-1", usage={"audio_seconds": "NaN"}),
        "usage.audio_seconds",
        id="audio-seconds-NaN-string",
    ),
    pytest.param(
        valid(model="whisper-1", usage={"audio_seconds": "Infinity"}),
        "usage.audio_seconds",
        id="audio-seconds-Infinity-string",
    ),
    pytest.param(valid(cost="NaN"), "cost", id="cost-NaN-string"),
    pytest.param(
        valid(usage={"input_tokens": 10**30}), "usage.input_tokens", id="huge-token-count"
    ),
    pytest.param(
        valid(model="whisper-1", usage={"audio_seconds": 10**30}),
        "usage.audio_seconds",
        id="huge-audio-seconds",
    ),
    pytest.param(valid(cost="1" + "0" * 30), "cost", id="huge-cost"),
    pytest.param(valid(revenue="1" + "0" * 30), "revenue", id="huge-revenue"),
    pytest.param(valid(usage={"tokens": 5}), "usage", id="unknown-meter"),
    pytest.param(valid(usage={}), "usage", id="empty-usage"),
    pytest.param(valid(usage=[1, 2]), "usage", id="usage-not-an-object"),
    pytest.param(
        valid(usage={"prompt_tokens": 10, "images": 1}), "usage.images", id="mixed-usage-shapes"
    ),
    pytest.param(
        valid(usage={"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 11}}),
        "usage.prompt_tokens_details.cached_tokens",
        id="cached-exceeds-prompt",
    ),
    pytest.param(without("provider"), "provider", id="missing-provider"),
    pytest.param(valid(provider=""), "provider", id="empty-provider"),
    pytest.param(without("model"), "model", id="missing-model"),
    pytest.param(valid(model=7), "model", id="model-not-a-string"),
    pytest.param(without("idempotency_key"), "idempotency_key", id="missing-idempotency-key"),
    pytest.param(valid(idempotency_key=""), "idempotency_key", id="empty-idempotency-key"),
    pytest.param(
        valid(idempotency_key="k" * 256), "idempotency_key", id="idempotency-key-256-chars"
    ),
    pytest.param(valid(idempotency_key=12345), "idempotency_key", id="idempotency-key-number"),
    pytest.param(valid(profile="p" * 256), "profile", id="profile-256-chars"),
    pytest.param(valid(profile=42), "profile", id="profile-number"),
    pytest.param(valid(cost=Raw("0.1")), "cost", id="cost-as-json-number"),
    pytest.param(valid(cost=1), "cost", id="cost-as-json-integer"),
    pytest.param(valid(cost="1e-3"), "cost", id="cost-in-exponent-notation"),
    pytest.param(valid(revenue=Raw("0.10")), "revenue", id="revenue-as-json-number"),
    pytest.param(valid(revenue=1), "revenue", id="revenue-as-json-integer"),
    pytest.param(
        valid(occurred_at="2026-11-22T10:00:00"), "occurred_at", id="occurred-at-without-offset"
    ),
    pytest.param(valid(occurred_at="yesterday"), "occurred_at", id="occurred-at-not-a-date"),
    pytest.param(valid(occurred_at=1764000000), "occurred_at", id="occurred-at-epoch-number"),
    pytest.param(valid(tags={"video_id": 1}), "tags.video_id", id="tag-value-number"),
    pytest.param(valid(tags={"video_id": {"a": "b"}}), "tags.video_id", id="tag-value-object"),
    pytest.param(valid(tags={"video_id": None}), "tags.video_id", id="tag-value-null"),
    pytest.param(valid(tags=["video_id", "v-1"]), "tags", id="tags-a-list"),
    pytest.param(valid(tags="video_id:v-1"), "tags", id="tags-a-string"),
    pytest.param(valid(reservation_id="not-a-uuid"), "reservation_id", id="bad-reservation-id"),
    pytest.param(valid(surprise=1), "surprise", id="unknown-top-level-field"),
]


@pytest.mark.parametrize(("body", "field"), BAD_EVENTS)
def test_a_bad_event_is_a_400_naming_the_field_and_writes_nothing(api, body, field):
    before = counts()

    response = post(api, body)

    details = assert_contract_error(response)["details"]
    assert field in details, details
    assert isinstance(details[field], str) and details[field]
    assert counts() == before


@pytest.mark.parametrize(("body", "field"), BAD_EVENTS)
def test_a_bad_event_in_a_batch_gets_its_own_400_naming_the_field(api, body, field):
    response = post(api, {"events": [body, valid(idempotency_key="good-one")]}, BATCH_URL)

    assert response.status_code == 200
    bad, good = response.json()["results"]
    assert bad["index"] == 0
    assert bad["status"] == 400
    assert bad["error"] == "invalid"
    assert field in bad["details"]
    assert good["status"] == 201
    assert list(UsageEvent.objects.values_list("idempotency_key", flat=True)) == ["good-one"]


@pytest.mark.parametrize(
    "body",
    [without("usage"), valid(usage=None), valid(usage=None, cost=None)],
    ids=["usage-omitted", "usage-null", "usage-and-cost-null"],
)
def test_neither_usage_nor_cost_is_a_400_and_writes_nothing(api, body):
    before = counts()

    details = assert_contract_error(post(api, body))["details"]

    # The model-level rule has no single field; it must still be named, and say what to send.
    assert details.keys() & {"usage", "cost", "non_field_errors"}
    assert any("usage" in message for message in details.values())
    assert counts() == before


@pytest.mark.parametrize(
    "text",
    ["[]", '[{"idempotency_key": "a"}]', '"a string"', "42", "null", "true"],
    ids=["empty-list", "list", "string", "number", "null", "true"],
)
def test_a_body_that_is_not_an_object_is_a_400(api, text):
    before = counts()

    details = assert_contract_error(post(api, text))["details"]

    assert details
    assert counts() == before


def test_a_nan_literal_in_the_body_is_a_400_and_writes_nothing(api):
    text = (
        '{"idempotency_key": "nan", "provider": "openai", "model": "gpt-4o",'
        ' "usage": {"input_tokens": NaN, "output_tokens": 2}}'
    )
    before = counts()

    body = assert_contract_error(post(api, text))

    assert "NaN" in body["message"]
    assert counts() == before


@pytest.mark.parametrize(
    "text",
    ["{", '{"idempotency_key": }', "{'single': 'quotes'}", '{"a": 1,}', "Infinity"],
    ids=["truncated", "missing-value", "single-quotes", "trailing-comma", "infinity-literal"],
)
def test_invalid_json_text_is_a_400_and_writes_nothing(api, text):
    before = counts()

    assert_contract_error(post(api, text))

    assert counts() == before


def test_invalid_utf8_is_a_400(api):
    before = counts()

    assert_contract_error(post(api, b'{"idempotency_key": "\xff\xfe"}'))

    assert counts() == before


def test_a_10_mb_body_is_refused_with_the_contract_error_body(api):
    body = valid(tags={"blob": "x" * (10 * 1024 * 1024)})
    before = counts()

    response = post(api, body)

    assert response.status_code in (400, 413)
    payload = response.json()
    assert set(payload) == {"error", "message", "details"}
    assert isinstance(payload["message"], str) and payload["message"]
    assert counts() == before


def test_deeply_nested_json_is_a_400_not_a_500(api):
    before = counts()

    response = post(api, "[" * 100_000 + "]" * 100_000)

    assert_contract_error(response)
    assert counts() == before


# -- batch envelope --------------------------------------------------------------------


def test_a_batch_of_1001_events_is_a_400_naming_events(api):
    events = [valid(idempotency_key=f"k-{i}") for i in range(1001)]
    before = counts()

    details = assert_contract_error(post(api, {"events": events}, BATCH_URL))["details"]

    assert "events" in details
    assert counts() == before


def test_a_batch_of_1000_events_is_accepted(api):
    events = [valid(idempotency_key=f"k-{i}", profile=f"p-{i % 7}") for i in range(1000)]

    response = post(api, {"events": events}, BATCH_URL)

    assert response.status_code == 200
    assert [r["status"] for r in response.json()["results"]] == [201] * 1000
    assert UsageEvent.objects.count() == 1000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        pytest.param([valid()], "events", id="a-bare-list"),
        pytest.param(valid(), "events", id="a-single-event"),
        pytest.param({}, "events", id="empty-object"),
        pytest.param({"events": []}, "events", id="no-events"),
        pytest.param({"events": {"0": valid()}}, "events", id="events-an-object"),
        pytest.param({"events": "x"}, "events", id="events-a-string"),
        pytest.param({"events": None}, "events", id="events-null"),
        pytest.param({"events": [valid()], "extra": 1}, "extra", id="unknown-field"),
        pytest.param("null", "events", id="null"),
    ],
)
def test_a_batch_that_is_not_an_events_object_is_a_400(api, body, field):
    before = counts()

    details = assert_contract_error(post(api, body, BATCH_URL))["details"]

    assert field in details
    assert counts() == before


# -- never a 500 -----------------------------------------------------------------------

JUNK = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**63,
    -(2**63) - 1,
    10**30,
    Raw("1.5"),
    Raw("-0.0"),
    Raw("1E+400"),
    Raw("1e-7"),
    "",
    " ",
    "x" * 300,
    "k" * 256,
    "NaN",
    "-Infinity",
    "-1",
    "0.1",
    "1e3",
    "999999999999.999999999999",
    "2026-11-22T10:00:00",
    "2026-11-22T10:00:00Z",
    "2026-02-30T10:00:00Z",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-14:00",
    "\u202eevil",
    "\U0001f600",
    "\ud800",
    str(uuid.UUID(int=7)),
    [],
    [1, "a", None],
    {},
    {"a": None},
    {"a": "b"},
    {"input_tokens": -1},
    {"input_tokens": 10**15, "output_tokens": 10**15},
    {"prompt_tokens": "x", "completion_tokens": None},
    {"prompt_tokens": 5, "prompt_tokens_details": [1]},
    {"usageMetadata": []},
    {"usageMetadata": {"promptTokenCount": Raw("1.5")}},
    {"usageMetadata": {"promptTokensDetails": [{"modality": 1, "tokenCount": "x"}]}},
    {"cache_read_input_tokens": 10**15, "input_tokens": 10**15},
    {"audio_seconds": "1.0000001"},
    {"audio_seconds": Raw("1e400")},
    {"nested": {"deeper": [{"x": [[[]]]}]}},
]
FIELDS = [
    "idempotency_key",
    "profile",
    "provider",
    "model",
    "operation",
    "usage",
    "cost",
    "occurred_at",
    "tags",
    "revenue",
    "reservation_id",
]


def check_never_500(client, body) -> list[str]:
    """Post ``body`` alone and inside a batch; return what went wrong, if anything."""
    problems = []
    single = post(client, body)
    if single.status_code >= 500:
        problems.append(f"single -> {single.status_code}")
    elif single.status_code >= 400 and set(single.json()) != {"error", "message", "details"}:
        problems.append(f"single -> {single.status_code} without the contract body")
    batch = post(client, {"events": [body]}, BATCH_URL)
    if batch.status_code >= 500:
        problems.append(f"batch -> {batch.status_code}")
    elif batch.status_code == 200:
        status = batch.json()["results"][0]["status"]
        if status >= 500:
            problems.append(f"batch event -> {status}")
    return problems


@pytest.mark.parametrize("field", FIELDS)
def test_junk_of_any_type_in_a_field_is_never_a_500(api, field):
    failures = {}
    for n, junk in enumerate(JUNK):
        body = valid(idempotency_key=f"junk-{field}-{n}")
        body[field] = junk
        problems = check_never_500(api, body)
        if problems:
            failures[repr(junk)[:60]] = problems
    assert failures == {}


@pytest.mark.parametrize("seed", range(25))
def test_random_junk_bodies_are_never_a_500(api, seed):
    rng = random.Random(seed)
    failures = {}
    for n in range(12):
        body = valid(idempotency_key=f"random-{seed}-{n}")
        for field in rng.sample(FIELDS, rng.randint(1, 4)):
            choice = rng.random()
            if choice < 0.15:
                body.pop(field, None)
            else:
                body[field] = rng.choice(JUNK)
        problems = check_never_500(api, body)
        if problems:
            failures[dumps(body)[:200]] = problems
    assert failures == {}


@pytest.mark.parametrize(
    ("fields", "detail"),
    [
        pytest.param({"idempotency_key": "key\x00"}, "idempotency_key", id="idempotency_key"),
        pytest.param({"profile": "user\x0042"}, "profile", id="profile"),
        pytest.param({"provider": "open\x00ai"}, "provider", id="provider"),
        pytest.param({"model": "gpt-4o\x00"}, "model", id="model"),
        pytest.param({"operation": "chat\x00"}, "operation", id="operation"),
        pytest.param({"tags": {"video_id": "v\x001"}}, "tags.video_id", id="tag-value"),
        pytest.param({"tags": {"vid\x00eo": "v-1"}}, "tags", id="tag-key"),
    ],
)
def test_a_nul_character_in_a_string_is_a_400_not_a_500(api, fields, detail):
    before = counts()

    response = post(api, valid(**fields))

    assert response.status_code < 500, response.content[:300]
    details = assert_contract_error(response)["details"]
    assert any(key.startswith(detail) for key in details), details
    assert counts() == before


def test_the_largest_accepted_image_count_is_not_a_500(api):
    # 10**15 images is within the documented cap; at dall-e-3's $0.04 per image that is
    # $40,000,000,000,000: either refused with a 400 or recorded, never a 500.
    response = post(api, valid(model="dall-e-3", usage={"images": 10**15}))

    assert response.status_code in (201, 400), response.content[:300]
    if response.status_code == 400:
        assert_contract_error(response)


@pytest.mark.parametrize("money_field", ["cost", "revenue"])
def test_accepted_amounts_summing_past_the_rollup_column_are_not_a_500(api, money_field):
    # Each amount is the largest the schema parses (12 digits before the point); two
    # events on the same day, profile, provider, model and operation share one rollup row.
    # A cost that large is refused per event (400: no call costs a billion dollars);
    # revenue is not capped but the rollup columns have room for its sums.
    top = "999999999999.999999999999"
    body = {
        "provider": "acme-ai",
        "model": "mystery-1",
        "occurred_at": "2026-11-22T10:00:00Z",
        "cost": "0.01",
        money_field: top,
    }
    first = post(api, {**body, "idempotency_key": "huge-1"})
    second = post(api, {**body, "idempotency_key": "huge-2"})

    assert first.status_code == (400 if money_field == "cost" else 201)
    assert second.status_code in (201, 400), second.content[:300]
    if second.status_code == 400:
        assert_contract_error(second)


@pytest.mark.parametrize("url", [USAGE_URL, BATCH_URL, "/api/v1/quota/check", "/api/v1/estimate"])
@pytest.mark.parametrize("number", ["1e9999999999999999999", "-1e-9999999999999999999"])
def test_a_number_past_decimals_range_is_a_400_and_writes_nothing(api, url, number):
    before = counts()

    body = assert_contract_error(post(api, f'{{"revenue": {number}}}', url))

    assert "out of range" in body["message"]
    assert counts() == before


LOWER_GROWS = "İ" * 60  # 60 characters, 120 once lower-cased


def test_a_provider_over_its_length_once_lower_cased_is_a_400_naming_it(api):
    before = counts()

    body = assert_contract_error(post(api, valid(provider=LOWER_GROWS)))

    assert "provider" in body["details"]
    assert counts() == before


def test_such_a_provider_in_a_batch_gets_its_own_400_and_the_others_are_recorded(api):
    events = [valid(idempotency_key=f"grow-{i}") for i in range(9)]
    events[4]["provider"] = LOWER_GROWS

    response = post(api, {"events": events}, BATCH_URL)

    assert response.status_code == 200, response.content[:500]
    statuses = [r["status"] for r in response.json()["results"]]
    assert statuses == [201] * 4 + [400] + [201] * 4
    assert "provider" in response.json()["results"][4]["details"]
    assert UsageEvent.objects.filter(idempotency_key__startswith="grow-").count() == 8


@pytest.mark.parametrize("url", ["/api/v1/quota/check", "/api/v1/estimate", "/api/v1/budgets"])
def test_such_a_provider_elsewhere_is_a_400_naming_it(api, url):
    body = {
        "provider": LOWER_GROWS,
        "model": "gpt-4o",
        "usage": {"input_tokens": 1},
        "estimate": {"input_tokens": 1},
        "name": "Cap",
        "limit": "10",
    }
    body = {k: v for k, v in body.items() if k in _FIELDS[url]}

    assert "provider" in assert_contract_error(post(api, body, url))["details"]


_FIELDS = {
    "/api/v1/quota/check": {"provider", "model", "estimate"},
    "/api/v1/estimate": {"provider", "model", "usage"},
    "/api/v1/budgets": {"provider", "name", "limit"},
}


def test_an_offset_past_postgresqls_range_in_a_batch_is_read_as_its_instant(api):
    events = [valid(idempotency_key=f"far-{i}") for i in range(9)]  # the arrays' path
    events[0]["occurred_at"] = "2026-11-22T10:00:00+20:00"

    response = post(api, {"events": events}, BATCH_URL)

    assert response.status_code == 200, response.content[:500]
    assert [r["status"] for r in response.json()["results"]] == [201] * 9
    far = UsageEvent.objects.get(idempotency_key="far-0")
    assert far.occurred_at.isoformat() == "2026-11-21T14:00:00+00:00"


def test_a_cost_without_usage_for_a_model_the_catalog_prices_is_a_400(api):
    """The catalog's price wins unless the organization takes client-priced
    events, and it has nothing to price: the $5 would have been recorded as 0."""
    before = counts()

    body = assert_contract_error(post(api, without("usage") | {"cost": "5.00"}))

    assert "allow_client_pricing" in body["details"]["usage"]
    assert counts() == before


def test_such_an_event_in_a_batch_gets_its_own_400(api):
    events = [valid(idempotency_key=f"cost-only-{i}") for i in range(3)]
    del events[1]["usage"]
    events[1]["cost"] = "5.00"

    response = post(api, {"events": events}, BATCH_URL)

    assert [r["status"] for r in response.json()["results"]] == [201, 400, 201]
    assert "usage" in response.json()["results"][1]["details"]


def test_a_cost_without_usage_is_taken_where_the_organization_takes_client_prices(api, tenant_a):
    tenant_a.org.allow_client_pricing = True
    tenant_a.org.save(update_fields=["allow_client_pricing"])

    response = post(api, without("usage") | {"cost": "5.00"})

    assert response.status_code == 201, response.content[:300]
    assert response.json()["cost"] == "5.000000000000"

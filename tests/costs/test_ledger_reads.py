"""Ledger reads: GET /api/v1/usage (cursor-paginated, filtered), /usage/export
(streamed csv|json) and /usage/summary?tag=key:value.

Expected costs are worked out by hand from the published prices:
gpt-4o $2.50/M input, $10/M output; whisper-1 $0.006/min; tts-1-hd $30/M characters;
gemini-2.5-pro $1.25/M in, $10/M out up to 200k input tokens, $2.50/M and $15/M above.
"""

from __future__ import annotations

import csv
import io
import json
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from costs.models import UsageEvent
from tests.factories import make_key

pytestmark = pytest.mark.django_db

# name -> (request body without idempotency key, hand-computed cost)
EVENTS: dict[str, tuple[dict, str]] = {
    "e1": (
        {
            "profile": "p-1",
            "provider": "openai",
            "model": "gpt-4o-2024-08-06",  # an alias: resolves to gpt-4o
            "operation": "chat",
            "usage": {"input_tokens": 1500, "output_tokens": 2000},
            "occurred_at": "2026-11-10T10:00:00Z",
            "tags": {"video_id": "v-1"},
        },
        # 1,500 x $2.50/M = 0.00375; 2,000 x $10/M = 0.02; total 0.02375
        "0.023750000000",
    ),
    "e2": (
        {
            "profile": "p-2",
            "provider": "openai",
            "model": "whisper-1",
            "operation": "transcribe",
            "usage": {"audio_seconds": "90"},
            "occurred_at": "2026-11-11T10:00:00Z",
            "tags": {"video_id": "v-1"},
        },
        # 90 s = 1.5 min x $0.006/min = 0.009
        "0.009000000000",
    ),
    "e3": (
        {
            "profile": "p-1",
            "provider": "openai",
            "model": "tts-1-hd",
            "operation": "tts",
            "usage": {"characters": 1000},
            "occurred_at": "2026-11-12T10:00:00Z",
            "tags": {"video_id": "v-2"},
        },
        # 1,000 chars x $30/M = 0.03
        "0.030000000000",
    ),
    "e4": (
        {
            "profile": "p-2",
            "provider": "google",
            "model": "gemini-2.5-pro",
            "operation": "chat",
            "usage": {"input_tokens": 250000, "output_tokens": 1000},
            "occurred_at": "2026-11-13T10:00:00Z",
            "tags": {"video_id": "v-1", "session_id": "s-9"},
        },
        # 250,000 > 200k: tier rates for all units: 250,000 x $2.50/M = 0.625;
        # 1,000 x $15/M = 0.015; total 0.64
        "0.640000000000",
    ),
    "e5": (
        {
            "provider": "openai",
            "model": "gpt-4o",
            "operation": "chat",
            "usage": {"input_tokens": 1000, "output_tokens": 500},
            "occurred_at": "2026-11-14T10:00:00Z",
        },
        # 1,000 x $2.50/M = 0.0025; 500 x $10/M = 0.005; total 0.0075
        "0.007500000000",
    ),
}


def _record(tenant, key: str, body: dict) -> dict:
    resp = tenant.client().post("/api/v1/usage", {"idempotency_key": key, **body}, format="json")
    assert resp.status_code == 201, resp.content
    return resp.json()


@pytest.fixture
def ledger(catalog, tenant_a, tenant_b) -> dict[str, str]:
    """The five events above for tenant A (name -> id), and noise in tenant B."""
    ids = {}
    for name, (body, cost) in EVENTS.items():
        out = _record(tenant_a, name, body)
        assert out["cost"] == cost, name
        ids[name] = out["id"]
    # Tenant B: same profile names, same tag, same provider: never visible to A.
    for name in ("e1", "e4"):
        _record(tenant_b, f"b-{name}", EVENTS[name][0])
    return ids


def _ids(resp) -> list[str]:
    assert resp.status_code == 200, resp.content
    return [row["id"] for row in resp.json()["results"]]


def _names(ids: dict[str, str], *names: str) -> set[str]:
    return {ids[n] for n in names}


def _stream(resp) -> str:
    assert resp.streaming is True
    return b"".join(resp.streaming_content).decode()


# -- list -----------------------------------------------------------------------------


def test_list_is_newest_first_and_only_the_callers_tenant(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage")
    assert _ids(resp) == [ledger[n] for n in ("e5", "e4", "e3", "e2", "e1")]
    by_id = {r["id"]: r for r in resp.json()["results"]}
    assert by_id[ledger["e1"]]["cost"] == "0.023750000000"
    assert by_id[ledger["e1"]]["model"] == "gpt-4o"
    assert by_id[ledger["e1"]]["model_requested"] == "gpt-4o-2024-08-06"
    assert by_id[ledger["e1"]]["profile"] == "p-1"
    assert by_id[ledger["e5"]]["profile"] is None


def test_cursor_pagination_with_limit_2_walks_every_event_exactly_once(ledger, tenant_a):
    client = tenant_a.client()
    url = "/api/v1/usage?limit=2"
    seen: list[str] = []
    pages = 0
    while url:
        resp = client.get(url)
        page = _ids(resp)
        assert len(page) <= 2
        seen.extend(page)
        url = resp.json()["next"]
        pages += 1
        assert pages < 10, "pagination does not end"
    assert pages == 3
    assert seen == [ledger[n] for n in ("e5", "e4", "e3", "e2", "e1")]


def test_cursor_pagination_walks_events_sharing_one_timestamp_exactly_once(catalog, tenant_a):
    same = "2026-11-15T08:00:00Z"
    created = set()
    for i in range(7):
        at = same if i < 5 else f"2026-11-1{i - 4}T08:00:00Z"
        out = _record(
            tenant_a,
            f"tie-{i}",
            {
                "provider": "openai",
                "model": "gpt-4o",
                "usage": {"input_tokens": 1},
                "occurred_at": at,
            },
        )
        created.add(out["id"])
    client = tenant_a.client()
    url, seen = "/api/v1/usage?limit=2", []
    while url:
        resp = client.get(url)
        seen.extend(_ids(resp))
        url = resp.json()["next"]
        assert len(seen) <= 7, "an event came twice"
    assert len(seen) == 7
    assert set(seen) == created


@pytest.mark.parametrize(
    "moments",
    [
        ["2026-11-15T08:00:00Z"] * 5,
        ["2026-11-15T08:00:00Z"] * 5 + ["2026-11-14T08:00:00Z", "2026-11-16T08:00:00Z"],
    ],
    ids=["all-at-one-moment", "a-run-between-others"],
)
def test_previous_links_walk_back_through_events_sharing_one_timestamp(catalog, tenant_a, moments):
    for i, at in enumerate(moments):
        body = {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 1}}
        _record(tenant_a, f"tie-{i}", {**body, "occurred_at": at})
    client = tenant_a.client()
    everything = _ids(client.get("/api/v1/usage?limit=100"))
    assert len(everything) == len(moments)
    url, pages = "/api/v1/usage?limit=2", []
    while url:
        resp = client.get(url)
        pages.append((url, _ids(resp)))
        url = resp.json()["next"]
    assert [i for _, page in pages for i in page] == everything
    # From the last page back to the first, each previous link gives the page before.
    url = client.get(pages[-1][0]).json()["previous"]
    for _, page in reversed(pages[:-1]):
        resp = client.get(url)
        assert _ids(resp) == page
        url = resp.json()["previous"]
    assert url is None


def test_offsets_past_what_postgresql_takes_are_read_in_utc_not_a_500(ledger, tenant_a):
    import base64

    client = tenant_a.client()
    # +20:00 is a valid ISO offset PostgreSQL refuses (it takes under 16 hours).
    far = client.get("/api/v1/usage", {"since": "2026-11-12T20:00:00+20:00"})
    utc = client.get("/api/v1/usage", {"since": "2026-11-12T00:00:00Z"})
    assert far.status_code == utc.status_code == 200
    assert _ids(far) == _ids(utc)
    beyond = client.get("/api/v1/usage", {"until": "9999-12-31T23:00:00-12:00"})
    assert beyond.status_code == 400
    assert "until" in beyond.json()["details"]
    position = "2026-11-15T08:00:00-16:00|00000000-0000-0000-0000-000000000000"
    cursor = base64.b64encode(f"o=0&r=0&p={position}".encode()).decode()
    assert client.get("/api/v1/usage", {"cursor": cursor}).status_code == 200


def test_a_tampered_cursor_is_a_400_naming_it(ledger, tenant_a):
    import base64

    positions = ("not-a-time|x", "2026-11-15T08:00:00|00000000-0000-0000-0000-000000000000")
    cursors = [base64.b64encode(f"o=0&r=0&p={p}".encode()).decode() for p in positions]
    for cursor in [*cursors, "not base64 at all", base64.b64encode(b"o=x").decode()]:
        resp = tenant_a.client().get("/api/v1/usage", {"cursor": cursor})
        assert resp.status_code == 400, cursor
        assert resp.json()["error"] == "invalid"
        assert "cursor" in resp.json()["details"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({"profile": "p-1"}, ("e1", "e3")),
        ({"provider": "openai"}, ("e1", "e2", "e3", "e5")),
        ({"provider": "OpenAI"}, ("e1", "e2", "e3", "e5")),
        ({"provider": "google"}, ("e4",)),
        ({"model": "gpt-4o"}, ("e1", "e5")),  # the resolved model, also for the alias
        ({"operation": "chat"}, ("e1", "e4", "e5")),
        ({"tag": "video_id:v-1"}, ("e1", "e2", "e4")),
        ({"tag": "session_id:s-9"}, ("e4",)),
        ({"tag": "video_id:v-404"}, ()),
        ({"since": "2026-11-12T10:00:00Z"}, ("e3", "e4", "e5")),  # inclusive
        ({"until": "2026-11-12T10:00:00Z"}, ("e1", "e2")),  # exclusive
        ({"since": "2026-11-11T10:00:00Z", "until": "2026-11-13T10:00:00Z"}, ("e2", "e3")),
        ({"profile": "p-2", "operation": "chat"}, ("e4",)),
        ({"provider": "openai", "tag": "video_id:v-1"}, ("e1", "e2")),
    ],
)
def test_each_filter_narrows_the_list(ledger, tenant_a, query, expected):
    resp = tenant_a.client().get("/api/v1/usage", query)
    assert set(_ids(resp)) == _names(ledger, *expected)


def test_since_with_an_offset_is_compared_as_an_instant(ledger, tenant_a):
    # 2026-11-12T11:00+01:00 is 10:00Z, e3's instant: inclusive.
    resp = tenant_a.client().get("/api/v1/usage", {"since": "2026-11-12T11:00:00+01:00"})
    assert set(_ids(resp)) == _names(ledger, "e3", "e4", "e5")


def test_unknown_profile_is_404(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage", {"profile": "nobody"})
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"


def test_another_tenants_profile_is_404_not_its_events(ledger, tenant_a, tenant_b):
    resp = tenant_a.client().get("/api/v1/usage", {"profile": tenant_b.profile.external_id})
    assert resp.status_code == 404


@pytest.mark.parametrize("tag", ["novalue", ":v-1"])
def test_malformed_tag_is_400_invalid_with_details_tag(ledger, tenant_a, tag):
    resp = tenant_a.client().get("/api/v1/usage", {"tag": tag})
    assert resp.status_code == 400
    body = resp.json()
    assert body["error"] == "invalid"
    assert "tag" in body["details"]


@pytest.mark.parametrize("param", ["since", "until"])
def test_bad_timestamp_is_400_with_details(ledger, tenant_a, param):
    resp = tenant_a.client().get("/api/v1/usage", {param: "yesterday"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid"
    assert param in resp.json()["details"]


def test_key_bound_to_a_profile_sees_only_that_profiles_events(ledger, tenant_a):
    from profiles.models import Profile

    profile = Profile.objects.get(organization=tenant_a.org, external_id="p-1")
    _, secret = make_key(tenant_a.org, scopes="read", profile=profile)
    client = tenant_a.client(secret)
    assert set(_ids(client.get("/api/v1/usage"))) == _names(ledger, "e1", "e3")
    assert set(_ids(client.get("/api/v1/usage", {"provider": "openai"}))) == _names(
        ledger, "e1", "e3"
    )
    export = json.loads(_stream(client.get("/api/v1/usage/export", {"format": "json"})))
    assert {r["id"] for r in export} == _names(ledger, "e1", "e3")
    # Naming another profile is refused, not widened.
    assert client.get("/api/v1/usage", {"profile": "p-2"}).status_code == 403


def test_key_without_read_scope_is_403_on_every_ledger_read(ledger, tenant_a):
    _, secret = make_key(tenant_a.org, scopes="ingest,check,manage")
    client = tenant_a.client(secret)
    for url in ("/api/v1/usage", "/api/v1/usage/export", "/api/v1/usage/summary"):
        resp = client.get(url, {"tag": "video_id:v-1"} if url.endswith("summary") else {})
        assert resp.status_code == 403, url
        assert resp.json()["error"] == "forbidden"


def test_missing_key_is_401(ledger):
    from rest_framework.test import APIClient

    assert APIClient().get("/api/v1/usage").status_code == 401


# -- export -----------------------------------------------------------------------------


def test_export_csv_has_a_header_and_one_row_per_event_with_exact_costs(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export", {"format": "csv"})
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(_stream(resp))))
    header, body = rows[0], rows[1:]
    for column in ("id", "occurred_at", "profile", "provider", "model", "cost", "priced", "tags"):
        assert column in header
    assert len(body) == 5
    by_id = {r[header.index("id")]: dict(zip(header, r, strict=True)) for r in body}
    assert set(by_id) == set(ledger.values())
    for name, (_, cost) in EVENTS.items():
        assert by_id[ledger[name]]["cost"] == cost, name
    assert by_id[ledger["e2"]]["audio_seconds"] in ("90", "90.000000")
    assert json.loads(by_id[ledger["e4"]]["tags"]) == {"video_id": "v-1", "session_id": "s-9"}


def test_export_defaults_to_csv(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export")
    rows = list(csv.reader(io.StringIO(_stream(resp))))
    assert rows[0][0] == "id"
    assert len(rows) == 1 + 5


@pytest.mark.parametrize("accept", ["text/csv", "text/csv, application/json;q=0.5", "*/*"])
def test_export_answers_a_client_that_accepts_csv(ledger, tenant_a, accept):
    client = tenant_a.client()
    resp = client.get("/api/v1/usage/export", {"format": "csv"}, HTTP_ACCEPT=accept)
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/csv")
    assert len(list(csv.reader(io.StringIO(_stream(resp))))) == 1 + 5
    # Its errors are JSON, whatever it accepts.
    bad = client.get("/api/v1/usage/export", {"format": "xml"}, HTTP_ACCEPT=accept)
    assert bad.status_code == 400
    assert bad.json()["details"]["format"]


def test_export_json_parses_to_a_list_of_the_same_events(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export", {"format": "json"})
    assert resp.status_code == 200
    data = json.loads(_stream(resp))
    assert isinstance(data, list)
    assert len(data) == 5
    assert [r["id"] for r in data] == [ledger[n] for n in ("e5", "e4", "e3", "e2", "e1")]
    costs = {r["id"]: r["cost"] for r in data}
    assert costs == {ledger[n]: cost for n, (_, cost) in EVENTS.items()}


def test_export_json_of_nothing_is_an_empty_list(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export", {"format": "json", "tag": "x:y"})
    assert json.loads(_stream(resp)) == []


def test_export_format_xml_is_400(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export", {"format": "xml"})
    assert resp.status_code == 400
    assert resp.json()["error"] == "invalid"
    assert "format" in resp.json()["details"]


def test_export_is_streamed_and_filtered(ledger, tenant_a):
    client = tenant_a.client()
    resp = client.get("/api/v1/usage/export", {"format": "csv", "provider": "openai"})
    rows = list(csv.reader(io.StringIO(_stream(resp))))
    assert {r[0] for r in rows[1:]} == _names(ledger, "e1", "e2", "e3", "e5")
    resp = client.get(
        "/api/v1/usage/export",
        {"format": "json", "tag": "video_id:v-1", "since": "2026-11-11T00:00:00Z"},
    )
    assert {r["id"] for r in json.loads(_stream(resp))} == _names(ledger, "e2", "e4")


def test_export_rejects_a_bad_filter_with_400_before_streaming(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/export", {"tag": "novalue"})
    assert resp.status_code == 400
    assert "tag" in resp.json()["details"]


# -- summary ------------------------------------------------------------------------------


def test_summary_by_tag_sums_cost_and_quantities_by_provider(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/summary", {"tag": "video_id:v-1"})
    assert resp.status_code == 200, resp.content
    body = resp.json()
    assert body["currency"] == "USD"
    rows = {r["provider"]: r for r in body["by_provider"]}
    assert set(rows) == {"openai", "google"}  # e3 (v-2) and e5 (no tag) are ignored
    # openai: e1 0.02375 + e2 0.009 = 0.03275
    assert rows["openai"]["cost"] == "0.032750000000"
    assert rows["openai"]["events"] == 2
    assert rows["openai"]["input_tokens"] == 1500
    assert rows["openai"]["output_tokens"] == 2000
    assert rows["openai"]["characters"] == 0  # e3's 1,000 chars carry video_id v-2
    assert Decimal(rows["openai"]["audio_seconds"]) == Decimal("90")
    # google: e4 alone, 0.64
    assert rows["google"]["cost"] == "0.640000000000"
    assert rows["google"]["events"] == 1
    assert rows["google"]["input_tokens"] == 250000
    assert rows["google"]["output_tokens"] == 1000
    # totals: 0.03275 + 0.64 = 0.67275; tenant B's tagged events are not counted
    assert body["totals"]["cost"] == "0.672750000000"
    assert body["totals"]["events"] == 3
    assert body["totals"]["input_tokens"] == 1500 + 250000


def test_summary_of_a_tag_nobody_carries_is_zero(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/summary", {"tag": "video_id:none"})
    assert resp.status_code == 200
    assert resp.json()["by_provider"] == []
    assert resp.json()["totals"]["cost"] == "0.000000000000"


def test_summary_bad_tag_is_400(ledger, tenant_a):
    resp = tenant_a.client().get("/api/v1/usage/summary", {"tag": "novalue"})
    assert resp.status_code == 400
    assert "tag" in resp.json()["details"]


def _ledger_queries(client, params: dict) -> tuple[dict, list[str]]:
    with CaptureQueriesContext(connection) as ctx:
        resp = client.get("/api/v1/usage/summary", params)
    assert resp.status_code == 200, resp.content
    return resp.json(), [q["sql"] for q in ctx.captured_queries if "costs_usageevent" in q["sql"]]


def test_summary_without_tag_or_time_range_is_read_from_the_rollups(ledger, tenant_a):
    body, ledger_reads = _ledger_queries(tenant_a.client(), {})
    assert ledger_reads == []
    rows = {r["provider"]: r for r in body["by_provider"]}
    # openai: e1 0.02375 + e2 0.009 + e3 0.03 + e5 0.0075 = 0.07025; google: e4 0.64
    assert rows["openai"]["cost"] == "0.070250000000"
    assert rows["openai"]["events"] == 4
    assert rows["openai"]["input_tokens"] == 1500 + 1000
    assert rows["openai"]["output_tokens"] == 2000 + 500
    assert rows["openai"]["characters"] == 1000
    assert Decimal(rows["openai"]["audio_seconds"]) == Decimal("90")
    assert rows["google"]["cost"] == "0.640000000000"
    # Tenant B's e1 and e4 are not counted.
    assert body["totals"]["cost"] == "0.710250000000"
    assert body["totals"]["events"] == 5


@pytest.mark.parametrize(
    ("params", "events", "cost"),
    [
        ({"profile": "p-1"}, 2, "0.053750000000"),  # e1 + e3
        ({"provider": "OpenAI"}, 4, "0.070250000000"),  # e1 e2 e3 e5
        ({"model": "gpt-4o"}, 2, "0.031250000000"),  # e1 (an alias of it) + e5
        ({"operation": "chat", "profile": "p-2"}, 1, "0.640000000000"),  # e4
        ({"model": "nothing-like-it"}, 0, "0.000000000000"),
    ],
)
def test_summary_from_the_rollups_keeps_the_filters(ledger, tenant_a, params, events, cost):
    body, ledger_reads = _ledger_queries(tenant_a.client(), params)
    assert ledger_reads == []
    assert (body["totals"]["events"], body["totals"]["cost"]) == (events, cost)


def test_summary_over_a_time_range_reads_the_ledger_and_keeps_it(ledger, tenant_a):
    params = {"since": "2026-11-11T10:00:00Z", "until": "2026-11-13T10:00:00Z"}
    body, ledger_reads = _ledger_queries(tenant_a.client(), params)
    assert ledger_reads  # events at any instant: only the ledger has them
    # e2 0.009 + e3 0.03 (e4 sits at the exclusive end)
    assert (body["totals"]["events"], body["totals"]["cost"]) == (2, "0.039000000000")


def test_reads_never_write(ledger, tenant_a):
    before = UsageEvent.objects.count()
    client = tenant_a.client()
    client.get("/api/v1/usage")
    _stream(client.get("/api/v1/usage/export"))
    client.get("/api/v1/usage/summary", {"tag": "video_id:v-1"})
    assert UsageEvent.objects.count() == before

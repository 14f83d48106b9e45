"""The daily summary, raised once per organization at 08:00 in its own time zone,
and spend-spike notices. The clock is moved with time_machine; every expected
figure is worked out by hand from published list prices (per 1M tokens):
gpt-4o $2.50 in / $10 out, gpt-4o-mini $0.15 / $0.60, claude-sonnet-4-5 $3 / $15.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
import time_machine
from rest_framework.test import APIClient

from costs.services.notices import daily_summary_raise, spend_spikes_raise
from profiles.models import Membership
from quotas.models import Alert
from quotas.notify import deliveries_send
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory, make_key

pytestmark = pytest.mark.django_db

BERLIN = ZoneInfo("Europe/Berlin")  # UTC+2 in June
LOS_ANGELES = ZoneInfo("America/Los_Angeles")  # UTC-7 in June


def tenant(slug: str, tz: str, owner: str):
    org = OrganizationFactory(slug=slug, name=slug.title(), timezone=tz)
    MembershipFactory(
        user=UserFactory(username=owner), organization=org, role=Membership.Role.OWNER
    )
    _, secret = make_key(org)
    return org, secret


def record(secret: str, client, key: str, when: datetime, model: str, **usage) -> str:
    provider = "anthropic" if model.startswith("claude") else "openai"
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    response = client.post(
        "/api/v1/usage",
        data=json.dumps(
            {
                "idempotency_key": key,
                "provider": provider,
                "model": model,
                "usage": usage,
                "occurred_at": when.isoformat(),
            }
        ),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return response.json()["cost"]


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


@pytest.fixture
def two_timezones(catalog):
    """Berlin and Los Angeles, with usage on "yesterday" (9 June, local) and
    around it. Costs by hand:

    Berlin, 9 June: gpt-4o 100k in + 50k out = $0.25 + $0.50 = $0.75 (10:00);
      claude 100k in + 20k out = $0.30 + $0.30 = $0.60 (23:30)  -> $1.35, 2 calls.
      3 June: gpt-4o-mini 1M in + 1M out = $0.15 + $0.60 = $0.75.
      10 June 00:30 (still 9 June in UTC): gpt-4o 1M out = $10: today, not yesterday.
      31 May 23:00: gpt-4o 100k out = $1.00: last month.
      Month to 9 June: 0.75 + 0.75 + 0.60 = $2.10; projected 2.10 * 30 / 9 = $7.00.
    Los Angeles, 9 June: gpt-4o-mini 2M in + 500k out = $0.30 + $0.30 = $0.60 (00:15);
      gpt-4o 200k in + 40k out = $0.50 + $0.40 = $0.90 (23:45, 10 June in UTC)
      -> $1.50, 2 calls, all openai.
      8 June 23:59 (9 June in UTC): claude 100k out = $1.50: the day before.
      10 June 00:05: gpt-4o 1M out = $10: today.
      Month to 9 June: 1.50 + 1.50 = $3.00; projected 3.00 * 30 / 9 = $10.00.
    """
    berlin, berlin_key = tenant("berlin", "Europe/Berlin", "anna@berlin.example")
    la, la_key = tenant("los-angeles", "America/Los_Angeles", "luis@la.example")
    rows = [
        (berlin_key, "b1", local(BERLIN, 2026, 6, 9, 10, 0), "gpt-4o", 100_000, 50_000, "0.75"),
        (
            berlin_key,
            "b2",
            local(BERLIN, 2026, 6, 9, 23, 30),
            "claude-sonnet-4-5",
            100_000,
            20_000,
            "0.6",
        ),
        (
            berlin_key,
            "b3",
            local(BERLIN, 2026, 6, 3, 12, 0),
            "gpt-4o-mini",
            1_000_000,
            1_000_000,
            "0.75",
        ),
        (berlin_key, "b4", local(BERLIN, 2026, 6, 10, 0, 30), "gpt-4o", 0, 1_000_000, "10"),
        (berlin_key, "b5", local(BERLIN, 2026, 5, 31, 23, 0), "gpt-4o", 0, 100_000, "1"),
        (
            la_key,
            "l1",
            local(LOS_ANGELES, 2026, 6, 9, 0, 15),
            "gpt-4o-mini",
            2_000_000,
            500_000,
            "0.6",
        ),
        (la_key, "l2", local(LOS_ANGELES, 2026, 6, 9, 23, 45), "gpt-4o", 200_000, 40_000, "0.9"),
        (
            la_key,
            "l3",
            local(LOS_ANGELES, 2026, 6, 8, 23, 59),
            "claude-sonnet-4-5",
            0,
            100_000,
            "1.5",
        ),
        (la_key, "l4", local(LOS_ANGELES, 2026, 6, 10, 0, 5), "gpt-4o", 0, 1_000_000, "10"),
    ]
    api = APIClient()
    for secret, key, when, model, tokens_in, tokens_out, cost in rows:
        got = record(
            secret, api, key, when, model, input_tokens=tokens_in, output_tokens=tokens_out
        )
        assert Decimal(got) == Decimal(cost), key
    return berlin, la


def test_each_org_gets_one_summary_at_eight_local_with_yesterdays_figures(
    two_timezones, mailoutbox
):
    berlin, la = two_timezones
    orgs = {"berlin": berlin, "la": la}

    # Beat was already running the evening before (UTC): Los Angeles, past 08:00
    # on 9 June local, catches up on its 8 June summary; Berlin is at 01:45 on 10 June.
    with time_machine.travel(datetime(2026, 6, 9, 23, 45, tzinfo=UTC), tick=False):
        assert daily_summary_raise(org=berlin) is None
        catch_up = daily_summary_raise(org=la)
    assert catch_up is not None
    assert catch_up.data["date"] == "2026-06-08"
    assert catch_up.data["yesterday_display"] == "$1.50"  # the claude call late on 8 June

    # A day of beat ticks, every 15 minutes from 10 June 00:00 UTC.
    raised: dict[str, list[tuple[datetime, Alert]]] = {"berlin": [], "la": []}
    start = datetime(2026, 6, 10, 0, 0, tzinfo=UTC)
    for tick in range(96):
        now = start + timedelta(minutes=15 * tick)
        with time_machine.travel(now, tick=False):
            for name, org in orgs.items():
                alert = daily_summary_raise(org=org)
                if alert is not None:
                    raised[name].append((now, alert))

    # Exactly one each, at 08:00 local: 06:00 UTC in Berlin, 15:00 UTC in Los Angeles.
    assert [(at, a.data["date"]) for at, a in raised["berlin"]] == [
        (datetime(2026, 6, 10, 6, 0, tzinfo=UTC), "2026-06-09")
    ]
    assert [(at, a.data["date"]) for at, a in raised["la"]] == [
        (datetime(2026, 6, 10, 15, 0, tzinfo=UTC), "2026-06-09")
    ]
    assert raised["berlin"][0][0].astimezone(BERLIN).hour == 8
    assert raised["la"][0][0].astimezone(LOS_ANGELES).hour == 8
    assert Alert.objects.filter(kind=Alert.Kind.DAILY_SUMMARY).count() == 3

    berlin_data = raised["berlin"][0][1].data
    assert Decimal(berlin_data["yesterday"]) == Decimal("1.35")
    assert Decimal(berlin_data["month"]) == Decimal("2.10")
    la_data = raised["la"][0][1].data
    assert Decimal(la_data["yesterday"]) == Decimal("1.50")
    assert Decimal(la_data["month"]) == Decimal("3.00")

    assert deliveries_send() == 3
    summaries = {m.to[0]: m for m in mailoutbox if "2026-06-09" in m.subject}
    assert set(summaries) == {"anna@berlin.example", "luis@la.example"}
    expected = {
        "anna@berlin.example": [
            "$1.35 in 2 call(s)",
            "openai: $0.75",
            "anthropic: $0.60",
            "openai/gpt-4o: $0.75",
            "anthropic/claude-sonnet-4-5: $0.60",
            "$2.10",
            "$7.00",
        ],
        "luis@la.example": [
            "$1.50 in 2 call(s)",
            "openai: $1.50",
            "openai/gpt-4o: $0.90",
            "openai/gpt-4o-mini: $0.60",
            "$3.00",
            "$10.00",
        ],
    }
    for to, mail in summaries.items():
        ((html, mimetype),) = mail.alternatives
        assert mimetype == "text/html"
        for figure in expected[to]:
            assert figure in mail.body, (to, figure)
            assert figure in html, (to, figure)
        for other_day in ("$10.00 in", "claude-sonnet-4-5: $1.50"):
            assert other_day not in mail.body
    assert "Europe/Berlin" in summaries["anna@berlin.example"].body
    assert "$1.35" in summaries["anna@berlin.example"].subject
    # Models ranked by cost: gpt-4o before gpt-4o-mini in Los Angeles.
    la_body = summaries["luis@la.example"].body
    assert la_body.index("openai/gpt-4o: $0.90") < la_body.index("openai/gpt-4o-mini: $0.60")


@pytest.fixture
def spike_org(catalog):
    org = OrganizationFactory(slug="spiky", name="Spiky", timezone="UTC")
    MembershipFactory(
        user=UserFactory(username="sam@spiky.example"), organization=org, role=Membership.Role.OWNER
    )
    _, secret = make_key(org)
    return org, secret


SPIKE_DAY = datetime(2026, 6, 20, 12, 0, tzinfo=UTC)


def trailing_days_then_today(secret: str, daily_out: int, today_out: int) -> None:
    """gpt-4o output tokens on each of the 7 days before SPIKE_DAY, then today."""
    api = APIClient()
    for back in range(1, 8):
        record(
            secret,
            api,
            f"day-{back}",
            SPIKE_DAY - timedelta(days=back),
            "gpt-4o",
            output_tokens=daily_out,
        )
    record(secret, api, "today", SPIKE_DAY - timedelta(hours=2), "gpt-4o", output_tokens=today_out)


def test_ten_dollar_day_after_a_dollar_a_day_raises_one_spend_spike(spike_org, mailoutbox):
    org, secret = spike_org
    # $1/day = 100k output tokens at $10/M; today 1M output tokens = $10.
    trailing_days_then_today(secret, daily_out=100_000, today_out=1_000_000)

    (spike,) = spend_spikes_raise(org=org, now=SPIKE_DAY)
    assert spend_spikes_raise(org=org, now=SPIKE_DAY) == []
    assert spend_spikes_raise(org=org, now=SPIKE_DAY + timedelta(hours=3)) == []
    assert Alert.objects.filter(organization=org, kind=Alert.Kind.SPEND_SPIKE).count() == 1
    assert Decimal(spike.data["today"]) == Decimal("10")
    assert Decimal(spike.data["average"]) == Decimal("1")
    assert spike.data["scope"] == "org"

    assert deliveries_send() == 1
    (mail,) = mailoutbox
    assert mail.to == ["sam@spiky.example"]
    ((html, _),) = mail.alternatives
    for body in (mail.body, html):
        assert "$10.00" in body
        assert "$1.00" in body


def test_spike_below_the_minimum_cost_raises_nothing(spike_org):
    org, secret = spike_org
    # $0.10/day (10k output tokens), then $0.90 today: 9x the average, but under $1.
    trailing_days_then_today(secret, daily_out=10_000, today_out=90_000)
    assert org.spike_min_cost == Decimal("1")

    assert spend_spikes_raise(org=org, now=SPIKE_DAY) == []
    assert not Alert.objects.filter(organization=org).exists()

    org.spike_min_cost = Decimal("0.50")  # the same day is a spike above a lower floor
    org.save()
    (spike,) = spend_spikes_raise(org=org, now=SPIKE_DAY)
    assert Decimal(spike.data["today"]) == Decimal("0.9")


def test_a_spike_of_a_profile_with_a_255_character_id_is_raised(spike_org):
    """The spike's key names the profile by its id: its own name, up to 255
    characters, made the key longer than its 200 and failed the whole run."""
    org, secret = spike_org
    long_id = "p" * 255
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    for key, when, tokens in [
        *((f"day-{b}", SPIKE_DAY - timedelta(days=b), 100_000) for b in range(1, 8)),
        ("today", SPIKE_DAY - timedelta(hours=2), 1_000_000),
    ]:
        body = {"idempotency_key": key, "provider": "openai", "model": "gpt-4o",
                "profile": long_id, "usage": {"output_tokens": tokens},
                "occurred_at": when.isoformat()}  # fmt: skip
        assert api.post("/api/v1/usage", body, format="json").status_code == 201

    spikes = spend_spikes_raise(org=org, now=SPIKE_DAY)

    assert sorted(s.data["scope"] for s in spikes) == ["org", f"profile:{long_id}"]
    assert spend_spikes_raise(org=org, now=SPIKE_DAY) == []  # once a day, each


def test_plain_text_mail_keeps_the_names_as_they_are(spike_org, mailoutbox):
    org, secret = spike_org
    org.name = "R&D <O'Brien>"
    org.save()
    trailing_days_then_today(secret, daily_out=100_000, today_out=1_000_000)
    spend_spikes_raise(org=org, now=SPIKE_DAY)

    assert deliveries_send() == 1
    (mail,) = mailoutbox
    assert mail.subject.startswith("[R&D <O'Brien>] ")  # it read [R&amp;D &lt;O&#x27;Brien&gt;]


def test_a_summary_sent_is_not_built_again_the_rest_of_the_day(spike_org, monkeypatch):
    import costs.services.notices as notices

    org, _ = spike_org
    at = datetime(2026, 6, 20, 9, 0, tzinfo=UTC)
    assert daily_summary_raise(org=org, now=at) is not None
    built: list[object] = []
    month_figures = notices.month_figures
    monkeypatch.setattr(
        notices, "month_figures", lambda **kw: built.append(kw) or month_figures(**kw)
    )

    for quarter in range(1, 8):
        assert daily_summary_raise(org=org, now=at + timedelta(minutes=15 * quarter)) is None

    assert built == []

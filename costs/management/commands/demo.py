"""A demo tenant with a month of realistic usage, so the dashboard opens alive."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import ROUND_UP, Decimal
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from costs.catalog.source import load_catalog
from costs.models import AIModel, UsageEvent
from costs.services import EventInput, catalog_sync, usage_record
from profiles.models import Organization
from profiles.services import organization_create, profile_get_or_create
from quotas.alerts import thresholds_evaluate
from quotas.models import Budget
from quotas.selectors import budget_states
from quotas.services import budget_create, budget_update

# (provider, model, operation, usage maker, weight)
CALLS = [
    (
        "openai",
        "gpt-4o",
        "chat",
        lambda r: {"input_tokens": r.randint(300, 4000), "output_tokens": r.randint(100, 1500)},
        30,
    ),
    (
        "openai",
        "gpt-4o-mini",
        "chat",
        lambda r: {"input_tokens": r.randint(200, 6000), "output_tokens": r.randint(50, 1200)},
        40,
    ),
    (
        "anthropic",
        "claude-sonnet-4-5",
        "chat",
        lambda r: {
            "input_tokens": r.randint(500, 8000),
            "cache_read_input_tokens": r.randint(0, 4000),
            "output_tokens": r.randint(100, 2000),
        },
        20,
    ),
    (
        "google",
        "gemini-2.5-flash",
        "summarize",
        lambda r: {
            "promptTokenCount": r.randint(1000, 20000),
            "candidatesTokenCount": r.randint(100, 800),
        },
        20,
    ),
    (
        "elevenlabs",
        "eleven_multilingual_v2",
        "tts",
        lambda r: {"characters": r.randint(200, 3000)},
        10,
    ),
    ("openai", "dall-e-3", "image", lambda r: {"images": r.randint(1, 2)}, 6),
    ("openai", "whisper-1", "transcribe", lambda r: {"audio_seconds": str(r.randint(20, 900))}, 6),
    ("stability", "stable-diffusion-xl", "image", lambda r: {"images": r.randint(1, 4)}, 5),
    ("bfl", "flux-pro-1.1", "image", lambda r: {"images": 1}, 3),
]


class Command(BaseCommand):
    help = "Fill a demo tenant with profiles, budgets and a month of realistic usage."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--org", default="demo")
        parser.add_argument("--days", type=int, default=30)
        parser.add_argument("--per-day", type=int, default=120)
        parser.add_argument(
            "--if-empty", action="store_true", help="Do nothing if the tenant has usage."
        )
        parser.add_argument("--seed", type=int, default=42)

    def handle(self, *args: Any, **opts: Any) -> None:
        if opts["days"] < 1 or opts["per_day"] < 1:
            raise CommandError("--days and --per-day must be positive.")
        org = Organization.objects.filter(slug=opts["org"]).first() or organization_create(
            slug=opts["org"], name="Demo Inc.", timezone_name="UTC"
        )
        if opts["if_empty"] and UsageEvent.objects.filter(organization=org).exists():
            self.stdout.write(f"{org.slug} already has usage; leaving it as it is.")
            return
        if not AIModel.objects.exists():
            self.stdout.write("Filling the price catalog first (sync_prices)...")
            catalog_sync(catalog=load_catalog())
        rng = random.Random(opts["seed"])  # noqa: S311 - demo data, not security
        profiles = [f"user-{n:03d}" for n in range(1, 13)]
        for external_id in profiles:
            profile_get_or_create(org=org, external_id=external_id)
        now = timezone.now()
        weights = [c[4] for c in CALLS]
        total = 0
        for day_offset in range(opts["days"] - 1, -1, -1):
            day_start = (now - timedelta(days=day_offset)).replace(
                hour=0, minute=0, second=0, microsecond=0
            )
            span = (now - day_start) if day_offset == 0 else timedelta(days=1)
            growth = 1 + (opts["days"] - day_offset) / opts["days"]  # usage grows over the month
            count = int(opts["per_day"] * growth * rng.uniform(0.7, 1.3))
            if day_offset == 0:
                count = max(1, int(count * span / timedelta(days=1)))
            events = []
            for i in range(count):
                provider, model, operation, usage, _ = rng.choices(CALLS, weights)[0]
                raw_usage = usage(rng)
                profile = rng.choice(profiles[:4] * 3 + profiles)  # a few heavy users
                events.append(
                    EventInput(
                        idempotency_key=f"demo-{day_start:%Y%m%d}-{i}",
                        request_hash=f"demo-{day_start:%Y%m%d}-{i}",
                        provider=provider,
                        model=model,
                        operation=operation,
                        usage=_normalize(raw_usage),
                        occurred_at=day_start + span * rng.random(),
                        profile=profile,
                        tags={"feature": rng.choice(["assistant", "search", "voice", "studio"])},
                        revenue=Decimal(rng.choice(["0", "0.02", "0.05", "0.10"])),
                    )
                )
            for start in range(0, len(events), 500):
                usage_record(org=org, events=events[start : start + 500])
            total += len(events)
        self._budgets(org)
        self.stdout.write(f"Recorded {total} events for {org.slug} over {opts['days']} days.")

    def _budgets(self, org: Organization) -> None:
        """Budgets sized from the usage just recorded: the period so far sits
        at a set share of each limit, so the dashboard opens with thresholds
        crossed (and their alerts raised) while calls still pass, whatever
        the day of the month."""
        if Budget.objects.filter(organization=org).exists():
            return
        heavy = profile_get_or_create(org=org, external_id="user-001")
        specs: list[tuple[dict[str, Any], str]] = [
            ({"name": "Monthly AI spend", "metric": "cost", "period": "monthly",
              "thresholds": [50, 80, 100], "action": "block"}, "0.85"),
            ({"name": "Daily spend", "metric": "cost", "period": "daily",
              "thresholds": [80, 100], "action": "warn"}, "0.6"),
            ({"name": "Images per month", "metric": "images", "period": "monthly",
              "action": "block"}, "0.7"),
            ({"name": "Messages per month", "metric": "requests", "period": "monthly",
              "action": "block"}, "0.6"),
            ({"name": "user-001 monthly quota", "profile": heavy, "metric": "cost",
              "period": "monthly", "thresholds": [75, 100], "action": "block"}, "0.9"),
        ]  # fmt: skip
        for fields, share in specs:
            budget = budget_create(org=org, limit=Decimal(1), **fields)  # opens from the ledger
            (state,) = budget_states(org=org, budgets=[budget])
            used = state.period.spent
            quantum = Decimal("0.01") if budget.metric == "cost" else Decimal(1)
            limit = (used / Decimal(share)).quantize(quantum, rounding=ROUND_UP)
            budget_update(budget=budget, limit=max(limit, quantum))
        thresholds_evaluate(org=org)


def _normalize(raw: dict[str, Any]) -> dict[str, Any]:
    from costs.pricing.normalize import normalize_usage

    return normalize_usage(raw)

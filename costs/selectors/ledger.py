"""Ledger reads: the organization's events (filtered by the API's FilterSet),
and summaries of them."""

from __future__ import annotations

from django.db import connection
from django.db.models import Count, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform

from costs.models import COUNT_METERS, UsageEvent
from profiles.models import Organization, Profile
from profiles.tenancy import for_org


def with_tag(qs: QuerySet[UsageEvent], key: str, value: str) -> QuerySet[UsageEvent]:
    """Events carrying tag ``key`` = ``value``."""
    if connection.vendor == "postgresql":
        return qs.filter(tags__contains={key: value})  # jsonb containment
    return qs.alias(_tag=KeyTextTransform(key, "tags")).filter(_tag=value)


def usage_events(*, org: Organization, profile: Profile | None = None) -> QuerySet[UsageEvent]:
    """The organization's ledger (only that profile's events when given), newest first."""
    qs = for_org(UsageEvent.objects.all(), org)
    if profile is not None:
        qs = qs.filter(profile=profile)
    return qs.order_by("-occurred_at", "-id")


def usage_summary(*, events: QuerySet[UsageEvent]) -> list[dict[str, object]]:
    """Cost and quantities of ``events``, by provider."""
    sums = {m: Sum(m) for m in [*COUNT_METERS, "audio_seconds", "cost"]}
    return list(
        events.order_by()
        .values("provider")
        .annotate(events=Count("id"), **sums)
        .order_by("provider")
    )

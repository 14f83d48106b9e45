"""Ledger reads: the organization's events (filtered by the API's FilterSet),
and summaries of them."""

from __future__ import annotations

from django.db import connection
from django.db.models import Count, QuerySet, Sum
from django.db.models.fields.json import KeyTextTransform

from costs.models import COUNT_METERS, UsageEvent
from costs.selectors.analytics import rollups
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


_SUMMED = [*COUNT_METERS, "audio_seconds", "cost"]


def usage_summary(*, events: QuerySet[UsageEvent]) -> list[dict[str, object]]:
    """Cost and quantities of ``events``, by provider."""
    sums = {m: Sum(m) for m in _SUMMED}
    return list(
        events.order_by()
        .values("provider")
        .annotate(events=Count("id"), **sums)
        .order_by("provider")
    )


# The ledger filters the rollups have as columns of their own.
ROLLED_UP = ("provider", "model", "operation")


def usage_summary_all_time(
    *, org: Organization, profile: Profile | None = None, **columns: str
) -> list[dict[str, object]]:
    """What ``usage_summary`` gives for all of the organization's events
    (that profile's only, when given; ``columns``: some of ``ROLLED_UP``,
    each equal to a value), read from the daily rollups, which hold every
    event once: no ledger scan, however long the history. Only for no time
    range: a rollup's day is the organization's local day when the event was
    recorded, which a later change of time zone leaves as it was. A
    repricing that moves all of a row's events to another row deletes it
    (``rollup_move``); rows at zero that an older worker may still leave
    during a deploy are left out, as the ledger has no such events."""
    unknown = columns.keys() - set(ROLLED_UP)
    if unknown:
        raise ValueError(f"not rollup columns: {sorted(unknown)}")
    qs = rollups(org=org, since=None, until=None, profile=profile).filter(events__gt=0, **columns)
    sums = {m: Sum(m) for m in ["events", *_SUMMED]}
    return list(qs.order_by().values("provider").annotate(**sums).order_by("provider"))

"""Spend figures read from the daily rollups (never the ledger)."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum
from django.utils import timezone

from costs.models import DailyUsage
from profiles.models import Profile


def profile_month_spend(*, profile: Profile) -> dict[str, Decimal | int]:
    """Cost and events of ``profile`` in the current month of its organization's time zone."""
    today = timezone.now().astimezone(profile.organization.tz).date()
    agg = DailyUsage.objects.filter(
        organization_id=profile.organization_id,
        profile=profile,
        day__gte=today.replace(day=1),
        day__lte=today,
    ).aggregate(cost=Sum("cost"), events=Sum("events"))
    return {"cost": agg["cost"] or Decimal(0), "events": agg["events"] or 0}

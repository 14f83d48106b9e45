"""What the isolation sweeps need to know about each model and endpoint.

Every tenant-scoped admin model needs a maker here, and every API URL pattern
with arguments needs an entry saying which of the other tenant's objects fills
them; a new model or endpoint without one fails the sweep until it is added
(and so, tested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models

from costs.models import AIModel, DailyUsage, Price, Provider, UsageEvent
from profiles.models import ApiKey, Membership, Organization, Profile
from quotas.models import Alert, Budget, Delivery, Reservation
from tests.factories import (
    AlertFactory,
    MembershipFactory,
    ProfileFactory,
    UserFactory,
    make_key,
)


def seed_usage(t: Any) -> UsageEvent:
    """Record one priced-by-client event for the tenant's profile, through the service."""
    from decimal import Decimal

    from django.utils import timezone

    from costs.services import EventInput, usage_record

    (result,) = usage_record(
        org=t.org,
        events=[
            EventInput(
                idempotency_key=f"{t.org.slug}-seed-{UsageEvent.objects.count()}",
                request_hash="seed",
                provider=f"{t.org.slug}-provider",
                model=f"{t.org.slug}-model",
                operation=f"{t.org.slug}-op",
                usage={"requests": 1},
                occurred_at=timezone.now(),
                profile=t.profile.external_id,
                cost=Decimal("1.25"),
                tags={"marker": f"{t.org.slug}-tag"},
            )
        ],
    )
    return result.event


def _override(t: Any) -> Price:
    provider, _ = Provider.objects.get_or_create(slug="isolation", defaults={"name": "Isolation"})
    model, _ = AIModel.objects.get_or_create(provider=provider, slug="iso-model")
    from django.utils import timezone

    return Price.objects.create(
        model=model, organization=t.org, effective_from=timezone.now(), input_tokens=1
    )


# model -> function(tenant) returning an object of that model owned by the tenant
ADMIN_OBJECT_MAKERS: dict[type[models.Model], Callable[[Any], models.Model]] = {
    Organization: lambda t: t.org,
    Profile: lambda t: ProfileFactory(organization=t.org, external_id=f"{t.org.slug}-hidden"),
    ApiKey: lambda t: make_key(t.org, name=f"{t.org.slug}-hidden-key")[0],
    Membership: lambda t: MembershipFactory(
        organization=t.org, user=UserFactory(username=f"member-of-{t.org.slug}@example.com")
    ),
    Price: _override,
    UsageEvent: seed_usage,
    DailyUsage: lambda t: DailyUsage.objects.get(
        organization=t.org, day=seed_usage(t).day, provider=f"{t.org.slug}-provider"
    ),
    Budget: lambda t: _budget(t),
    Reservation: lambda t: _reservation(t),
    Alert: lambda t: _alert(t),
    Delivery: lambda t: Delivery.objects.create(
        alert=_alert(t),
        channel="email",
        target=f"ops@{t.org.slug}.test",
        next_attempt_at=t.org.created_at,
    ),
}


# url name -> function(tenant) returning the kwargs that name the tenant's object
def _budget(t: Any) -> Any:
    from decimal import Decimal

    from quotas.services import budget_create

    return budget_create(org=t.org, name=f"{t.org.slug}-budget", limit=Decimal("10"))


def _reservation(t: Any) -> Any:
    from quotas.services import Dimensions, quota_check

    _budget(t)
    result = quota_check(
        org=t.org,
        dims=Dimensions(None, None, "openai", "gpt-4o", "default"),
        amounts={"cost": 1},
        reserve=True,
    )
    return result.reservation


def _alert(t: Any) -> Any:
    return AlertFactory(
        organization=t.org, title=f"{t.org.slug}-alert", message=f"{t.org.slug} spent a lot"
    )


API_URL_KWARGS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "profiles-detail": lambda t: {"external_id": t.profile.external_id},
    "budgets-detail": lambda t: {"budget_id": _budget(t).pk},
    "reservation-detail": lambda t: {"reservation_id": _reservation(t).pk},
    "profile-dashboard": lambda t: {"external_id": t.profile.external_id},
    "alerts-read": lambda t: {"alert_id": _alert(t).pk},
    "alerts-resolve": lambda t: {"alert_id": _alert(t).pk},
}

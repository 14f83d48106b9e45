"""The pre-flight check: price a call's estimate and ask the limiter whether it
fits every budget that applies (with ``reserve``, hold it)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from decimal import Decimal

from django.db import DatabaseError
from django.utils import timezone

from costs.selectors.budget_spend import budget_amounts
from costs.selectors.catalog import model_name, model_resolve
from costs.selectors.pricing import cost_estimate
from costs.services.ahead import read_ahead
from profiles.models import ApiKey, Organization, Profile
from profiles.services import (
    CredentialsVanished,
    credentials_vanished,
    profile_get_or_create,
    profile_vanished,
)
from quotas.services import (
    CheckResult,
    Dimensions,
    LimiterUnavailable,
    quota_check,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Preflight:
    cost: Decimal
    priced: bool
    result: CheckResult | None  # None: the limiter could not answer


def preflight_check(
    *,
    org: Organization,
    api_key: ApiKey | None,
    acting: Profile | str | None,
    provider: str,
    model: str,
    operation: str,
    meters: dict[str, int | Decimal],
    cost: Decimal | None,
    reserve: bool,
    ttl_seconds: int,
    org_fresh: bool = False,
) -> Preflight:
    """``cost`` is the client's own figure, else the estimate is priced from
    ``meters``. ``acting`` is the profile the call is for, or its name (looked
    up, created on first mention). The profile, the prices and the budgets are
    read in one statement (a reservation may find them in the setup memo);
    a reservation is one more. No result when the
    limiter could not answer, its read or its reservation failing (the caller
    answers by the fail mode); ``CredentialsVanished`` when the key or its
    organization was deleted while the reservation was taken. ``org_fresh``: ``org`` was read from the
    database in this request, so a reservation, whose statement reads the
    counters it reports, may take the rest from the setup memo
    (``read_ahead``)."""
    resolved = model_resolve(provider=provider, model=model)
    named = [acting] if isinstance(acting, str) else []
    dims = Dimensions(
        profile_id=acting.pk if isinstance(acting, Profile) else None,
        api_key_id=api_key.pk if api_key else None,
        provider=provider,
        model=model_name(resolved, model),
        operation=operation,
    )
    now = timezone.now()
    try:
        ahead = read_ahead(
            org=org,
            at=now,
            # The client's own cost needs no prices.
            model_ids=[resolved.id] if resolved is not None and cost is None else [],
            profile_names=named,
            dims=[dims],
            uncounted=org_fresh and reserve,
        )
    except DatabaseError:
        # The limiter's own read failing is the limiter failing (a lock or
        # statement timeout, a failover): the fail mode answers, with the
        # client's cost if it gave one (the prices were not read).
        logger.exception("limiter unavailable for %s", org.slug)
        return Preflight(cost if cost is not None else Decimal(0), cost is not None, None)
    if named:
        # A profile named for the first time is created (no budget names it yet).
        profile = ahead.profiles.get(named[0]) or profile_get_or_create(
            org=org, external_id=named[0]
        )
        dims = dataclasses.replace(dims, profile_id=profile.pk)
    priced = cost is not None
    if cost is None:
        estimate = cost_estimate(
            org=org, provider=provider, model=model, usage=meters, at=now, book=ahead.book
        )
        cost, priced = estimate.cost, estimate.priced
    try:
        result = quota_check(
            org=org,
            dims=dims,
            amounts=budget_amounts(meters, cost),
            reserve=reserve,
            ttl_seconds=ttl_seconds,
            now=now,
            states=ahead.states,
        )
    except LimiterUnavailable as exc:
        if credentials_vanished(exc):
            # The key (or its organization) was deleted after it authenticated
            # this request: nothing was held, and it no longer authenticates.
            raise CredentialsVanished(str(exc)) from exc
        if org_fresh and profile_vanished(exc):
            # The profile was deleted after it was looked up (or remembered):
            # nothing was held; again, looking it up anew.
            logger.info("a profile checked for %s was deleted meanwhile; again", org.slug)
            return preflight_check(
                org=org,
                api_key=api_key,
                acting=acting,
                provider=provider,
                model=model,
                operation=operation,
                meters=meters,
                cost=cost,
                reserve=reserve,
                ttl_seconds=ttl_seconds,
            )
        logger.exception("limiter unavailable for %s", org.slug)
        return Preflight(cost, priced, None)
    return Preflight(cost, priced, result)

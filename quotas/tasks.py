"""Celery tasks of the limiter: thin wrappers that take ids and call services.
Every one is idempotent: running it twice at once changes nothing more than once."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from celery import shared_task
from django.utils import timezone

from profiles.models import Organization
from quotas.alerts import thresholds_evaluate
from quotas.notify import deliveries_send
from quotas.reconcile import periods_reconcile
from quotas.services import (
    budget_states_now,
    reservations_expire,
    reservations_purge,
)

logger = logging.getLogger(__name__)


def for_each_organization(orgs: Iterable[Organization], work: Callable[[Organization], int]) -> int:
    """The sum of ``work(org)`` over ``orgs``; an organization whose work
    fails is logged and skipped, so the ones after it still get theirs."""
    done = 0
    for org in orgs:
        try:
            done += work(org)
        except Exception:  # noqa: BLE001 - one organization must not stop the others
            logger.exception("periodic work failed for organization %s", org.slug)
    return done


def _orgs_with_budgets(org_id: str | None) -> list[Organization]:
    qs = Organization.objects.filter(budgets__active=True).distinct()
    if org_id:
        qs = qs.filter(pk=org_id)
    return list(qs)


@shared_task(name="quotas.evaluate_thresholds")
def evaluate_thresholds(org_id: str | None = None, budget_ids: list[str] | None = None) -> int:
    raised = for_each_organization(
        _orgs_with_budgets(org_id),
        lambda org: len(thresholds_evaluate(org=org, budget_ids=budget_ids)),
    )
    if raised:
        send_notifications.delay()
    return raised


@shared_task(name="quotas.send_notifications")
def send_notifications() -> int:
    return deliveries_send()


@shared_task(name="quotas.expire_reservations")
def expire_reservations() -> int:
    return reservations_expire()


@shared_task(name="quotas.purge_reservations")
def purge_reservations() -> int:
    return reservations_purge()


@shared_task(name="quotas.open_periods")
def open_periods() -> int:
    """Open the current period of every active budget, so counters and
    dashboards have their row from the first minute (nothing depends on it:
    any check or charge opens a missing period itself)."""
    return for_each_organization(
        _orgs_with_budgets(None), lambda org: len(budget_states_now(org, timezone.now()))
    )


@shared_task(name="quotas.reconcile_counters")
def reconcile_counters(org_id: str | None = None, budget_ids: list[str] | None = None) -> int:
    drift = for_each_organization(
        _orgs_with_budgets(org_id),
        lambda org: len(periods_reconcile(org=org, budget_ids=budget_ids)),
    )
    if drift:
        send_notifications.delay()
    return drift

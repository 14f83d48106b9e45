"""Celery tasks of the cost domain: thin, idempotent wrappers over services."""

from __future__ import annotations

from celery import shared_task

from costs.catalog.source import load_catalog
from costs.services.catalog import catalog_sync
from costs.services.notices import daily_summary_raise, spend_spikes_raise, unpriced_usage_raise
from costs.services.reprice import usage_reprice
from profiles.models import Organization
from quotas.tasks import for_each_organization, send_notifications


def _orgs(org_id: str | None) -> list[Organization]:
    qs = Organization.objects.all()
    return list(qs.filter(pk=org_id) if org_id else qs)


@shared_task(name="costs.daily_summaries")
def daily_summaries() -> int:
    """Runs every quarter hour; each organization gets yesterday's summary once,
    from 08:00 in its own time zone."""
    raised = for_each_organization(_orgs(None), lambda org: int(bool(daily_summary_raise(org=org))))
    if raised:
        send_notifications.delay()
    return raised


@shared_task(name="costs.spend_spikes")
def spend_spikes() -> int:
    raised = for_each_organization(_orgs(None), lambda org: len(spend_spikes_raise(org=org)))
    if raised:
        send_notifications.delay()
    return raised


@shared_task(name="costs.unpriced_usage")
def unpriced_usage(org_id: str | None = None) -> int:
    raised = for_each_organization(
        _orgs(org_id), lambda org: int(bool(unpriced_usage_raise(org=org)))
    )
    if raised:
        send_notifications.delay()
    return raised


@shared_task(name="costs.reprice")
def reprice() -> int:
    return usage_reprice().repriced


@shared_task(name="costs.sync_prices")
def sync_prices() -> int:
    return catalog_sync(catalog=load_catalog()).changed

"""The admin dashboard: the admin index for anyone who belongs to an
organization (superusers pick one), and the JSON it refreshes from."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.http import Http404, HttpRequest, JsonResponse
from django.utils import timezone

from costs.selectors.analytics import money, rollups, totals
from costs.selectors.dashboard import RANGES, RangeError, dashboard, day_range
from profiles.models import Organization
from profiles.tenancy import orgs_visible_to
from quotas.alerts import projection
from quotas.models import Alert
from quotas.selectors import bar_level, budget_status, overview_budget_states


def _org_for(request: HttpRequest) -> tuple[Organization | None, list[Organization]]:
    orgs = list(orgs_visible_to(request.user).order_by("name")[:500])
    slug = request.GET.get("org")
    if slug:
        chosen = next((o for o in orgs if o.slug == slug), None)
        if chosen is None:
            raise Http404("No such organization.")
        return chosen, orgs
    return (orgs[0] if orgs else None), orgs


def _bar(status: dict[str, Any], thresholds: list[int]) -> dict[str, Any]:
    percent = Decimal(status["percent_used"])
    width = max(Decimal(0), min(percent, Decimal(100)))
    return {**status, "width": f"{width:f}", "level": bar_level(percent, thresholds)}


def dashboard_payload(org: Organization, range_name: str | None) -> dict[str, Any]:
    """The contract's dashboard for the range, plus the cards and projections
    the admin page shows."""
    days = day_range(org=org, name=range_name)
    body = dashboard(org=org, days=days)
    today = timezone.now().astimezone(org.tz).date()
    week_start = today - timedelta(days=today.weekday())
    tomorrow = today + timedelta(days=1)
    states = overview_budget_states(org=org)
    bars: dict[str, list[dict[str, Any]]] = {"daily": [], "weekly": [], "monthly": [], "total": []}
    warnings: list[str] = []
    now = timezone.now()
    for state in states:
        status = budget_status(state)
        bars[state.budget.period].append(_bar(status, state.budget.thresholds))
        projected = projection(state.period, now)
        if state.budget.is_money and projected is not None and projected > state.budget.limit:
            warnings.append(
                f"{state.budget.name}: on track to exceed the budget by "
                f"{money(projected - state.budget.limit)} (projected {money(projected)} "
                f"of {money(state.budget.limit)})."
            )
    cards = {
        "today": totals(rollups(org=org, since=today, until=tomorrow))["cost"],
        "week": totals(rollups(org=org, since=week_start, until=tomorrow))["cost"],
        "month": Decimal(body["month"]["spent"]),
    }
    recent = [
        {
            "title": a.title,
            "severity": a.severity,
            "created_at": a.created_at.isoformat(),
            "read": a.read_at is not None,
        }
        for a in Alert.objects.filter(organization=org).order_by("-created_at")[:8]
    ]
    return {
        **body,
        "org": {"slug": org.slug, "name": org.name},
        "cards": {k: {"cost": f"{v:.12f}", "display": money(v)} for k, v in cards.items()},
        "bars": bars,
        "projection": {
            "display": money(Decimal(body["month"]["projected"])),
            "warnings": warnings,
        },
        "recent_alerts": recent,
    }


def dashboard_context(request: HttpRequest, context: dict[str, Any]) -> dict[str, Any]:
    """unfold's DASHBOARD_CALLBACK: the admin index shows the dashboard."""
    try:
        org, orgs = _org_for(request)
    except Http404:
        org, orgs = None, []
    if org is None:
        return context
    range_name = request.GET.get("range") if request.GET.get("range") in RANGES else "30d"
    context.update(
        {
            "dashboard": dashboard_payload(org, range_name),
            "dashboard_orgs": orgs,
            "dashboard_org": org,
            "dashboard_range": range_name,
            "dashboard_ranges": RANGES,
        }
    )
    return context


def dashboard_data(request: HttpRequest) -> JsonResponse:
    """JSON for the page's 30-second refresh (staff session, tenant-scoped)."""
    org, _ = _org_for(request)
    if org is None:
        raise Http404("No organization.")
    try:
        payload = dashboard_payload(org, request.GET.get("range") or "30d")
    except RangeError as exc:
        return JsonResponse(
            {"error": "invalid", "message": str(exc), "details": {exc.field: str(exc)}}, status=400
        )
    return JsonResponse(payload)

"""Dashboards: the organization's and one profile's."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from costs.selectors.dashboard import RANGES, RangeError, dashboard, day_range
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.models import Profile
from quotas.api.views import BudgetStatusOut

PARAMETERS = [
    OpenApiParameter(
        "range",
        str,
        enum=list(RANGES),
        description="Default 30d; days are local to the organization.",
    ),
    OpenApiParameter("since", str, description="Date or timestamp, inclusive (instead of range)."),
    OpenApiParameter("until", str, description="Date or timestamp, inclusive (default today)."),
]


def _rows(name: str, keys: dict[str, serializers.Field]) -> serializers.Serializer:
    """A list of per-group figures: the group's keys, then its sums."""
    return inline_serializer(
        name,
        {
            **keys,
            "cost": serializers.CharField(),
            "requests": serializers.IntegerField(),
            "input_tokens": serializers.IntegerField(),
            "output_tokens": serializers.IntegerField(),
        },
        many=True,
    )


def _dashboard_out() -> serializers.Serializer:
    text, count = serializers.CharField, serializers.IntegerField
    return inline_serializer(
        "Dashboard",
        {
            "range": text(help_text="the range asked for, or custom"),
            "since": serializers.DateTimeField(),
            "until": serializers.DateTimeField(help_text="exclusive: the day after the last"),
            "timezone": text(),
            "currency": text(),
            "profile": text(allow_null=True),
            "totals": inline_serializer(
                "DashboardTotals",
                {
                    "cost": text(),
                    "requests": count(),
                    "input_tokens": count(),
                    "output_tokens": count(),
                    "revenue": text(),
                    "margin": text(),
                },
            ),  # fmt: skip
            "by_provider": _rows("DashboardByProvider", {"provider": text()}),
            "by_model": _rows("DashboardByModel", {"provider": text(), "model": text()}),
            "by_operation": _rows("DashboardByOperation", {"operation": text()}),
            "by_profile": _rows("DashboardByProfile", {"profile": text(), "display_name": text()}),
            "by_day": inline_serializer(
                "DashboardByDay",
                {"date": serializers.DateField(), "cost": text(), "requests": count()},
                many=True,
            ),
            "by_day_provider": inline_serializer(
                "DashboardByDayProvider",
                {"date": serializers.DateField(), "provider": text(), "cost": text()},
                many=True,
            ),
            "month": inline_serializer(
                "DashboardMonth",
                {
                    "spent": text(),
                    "daily_average": text(),
                    "projected": text(),
                    "days_elapsed": count(),
                    "days_in_month": count(),
                },
            ),  # fmt: skip
            "budgets": BudgetStatusOut(many=True),
            "alerts": inline_serializer("DashboardAlerts", {"unread": count()}),
        },
    )


DashboardOut = _dashboard_out()


class _DashboardBase(TenantApiView):
    scopes = {"GET": "read"}

    def render(self, request: Request, profile: Profile | None) -> Response:
        params = request.query_params
        try:
            days = day_range(
                org=self.org,
                name=params.get("range"),
                since=params.get("since"),
                until=params.get("until"),
                profile=profile,
            )
        except RangeError as exc:
            raise ApiError(
                "The query is invalid; see details.", details={exc.field: str(exc)}
            ) from exc
        return Response(dashboard(org=self.org, days=days, profile=profile))


class DashboardApi(_DashboardBase):
    @extend_schema(
        parameters=[*PARAMETERS, OpenApiParameter("profile", str)],
        responses=DashboardOut,
        operation_id="dashboard",
    )
    def get(self, request: Request) -> Response:
        profile = self.acting_profile(request.query_params.get("profile"), create=False)
        return self.render(request, profile)


class ProfileDashboardApi(_DashboardBase):
    @extend_schema(parameters=PARAMETERS, responses=DashboardOut, operation_id="profile_dashboard")
    def get(self, request: Request, external_id: str) -> Response:
        return self.render(request, self.acting_profile(external_id, create=False))

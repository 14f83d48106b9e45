"""Dashboards: the organization's and one profile's."""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from costs.selectors.dashboard import RANGES, RangeError, dashboard, day_range
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.models import Profile

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
        responses=OpenApiTypes.OBJECT,
        operation_id="dashboard",
    )
    def get(self, request: Request) -> Response:
        profile = self.acting_profile(request.query_params.get("profile"), create=False)
        return self.render(request, profile)


class ProfileDashboardApi(_DashboardBase):
    @extend_schema(
        parameters=PARAMETERS, responses=OpenApiTypes.OBJECT, operation_id="profile_dashboard"
    )
    def get(self, request: Request, external_id: str) -> Response:
        return self.render(request, self.acting_profile(external_id, create=False))

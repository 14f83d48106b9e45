from __future__ import annotations

from django.urls import path

from costs.api.catalog_views import EstimateApi, PricingApi
from costs.api.dashboard_views import DashboardApi, ProfileDashboardApi
from costs.api.ledger_views import UsageExportApi, UsageListApi, UsageSummaryApi
from costs.api.views import UsageBatchApi, UsageRecordApi


class UsageApi(UsageRecordApi, UsageListApi):
    """``/usage``: POST records an event (ingest), GET lists the ledger (read)."""

    scopes = {"POST": "ingest", "GET": "read"}


urlpatterns = [
    path("usage", UsageApi.as_view(), name="usage"),
    path("usage/batch", UsageBatchApi.as_view(), name="usage-batch"),
    path("usage/export", UsageExportApi.as_view(), name="usage-export"),
    path("usage/summary", UsageSummaryApi.as_view(), name="usage-summary"),
    path("pricing", PricingApi.as_view(), name="pricing"),
    path("estimate", EstimateApi.as_view(), name="estimate"),
    path("dashboard", DashboardApi.as_view(), name="dashboard"),
    path(
        "profiles/<path:external_id>/dashboard",
        ProfileDashboardApi.as_view(),
        name="profile-dashboard",
    ),
]

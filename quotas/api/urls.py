from __future__ import annotations

from django.urls import path

from quotas.api.alerts import AlertListApi, AlertReadAllApi, AlertReadApi, AlertResolveApi
from quotas.api.budgets import BudgetDetailApi, BudgetListApi
from quotas.api.views import QuotaCheckApi, ReservationApi

urlpatterns = [
    path("quota/check", QuotaCheckApi.as_view(), name="quota-check"),
    path("reservations/<uuid:reservation_id>", ReservationApi.as_view(), name="reservation-detail"),
    path("budgets", BudgetListApi.as_view(), name="budgets-list"),
    path("budgets/<uuid:budget_id>", BudgetDetailApi.as_view(), name="budgets-detail"),
    path("alerts", AlertListApi.as_view(), name="alerts-list"),
    path("alerts/read-all", AlertReadAllApi.as_view(), name="alerts-read-all"),
    path("alerts/<uuid:alert_id>/read", AlertReadApi.as_view(), name="alerts-read"),
    path("alerts/<uuid:alert_id>/resolve", AlertResolveApi.as_view(), name="alerts-resolve"),
]

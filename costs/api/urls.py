from __future__ import annotations

from django.urls import path

from costs.api.views import UsageBatchApi, UsageRecordApi

urlpatterns = [
    path("usage", UsageRecordApi.as_view(), name="usage-record"),
    path("usage/batch", UsageBatchApi.as_view(), name="usage-batch"),
]

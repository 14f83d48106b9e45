from __future__ import annotations

from django.urls import path

from profiles.api.views import ProfileDetailApi, ProfileListApi

urlpatterns = [
    path("profiles", ProfileListApi.as_view(), name="profiles-list"),
    path("profiles/<path:external_id>", ProfileDetailApi.as_view(), name="profiles-detail"),
]

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from config.health import healthz
from costs.admin_dashboard import dashboard_data

# costs before profiles: a profile's id may hold "/" (the client app's own
# id), so "profiles/<id>/dashboard" must be tried before "profiles/<id>".
api_v1 = [
    path("", include("costs.api.urls")),
    path("", include("profiles.api.urls")),
    path("", include("quotas.api.urls")),
]

urlpatterns = [
    path(
        "admin/dashboard/data", admin.site.admin_view(dashboard_data), name="admin-dashboard-data"
    ),
    path("admin/", admin.site.urls),
    path("api/v1/", include(api_v1)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="api-docs"),
    path("healthz", healthz, name="healthz"),
]

handler400 = "config.errors.bad_request"
handler404 = "config.errors.not_found"
handler500 = "config.errors.server_error"

"""The unread-alert count shown in the admin header."""

from __future__ import annotations

from django.http import HttpRequest

from profiles.tenancy import orgs_visible_to
from quotas.models import Alert


def unread_alerts(request: HttpRequest) -> dict[str, int]:
    user = getattr(request, "user", None)
    if (
        user is None
        or not user.is_authenticated
        or not user.is_staff
        or not request.path.startswith("/admin/")
    ):
        return {}
    alerts = Alert.objects.filter(read_at__isnull=True)
    if not user.is_superuser:
        alerts = alerts.filter(organization__in=orgs_visible_to(user))
    return {"unread_alert_count": alerts.count()}

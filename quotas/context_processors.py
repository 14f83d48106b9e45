"""The unread-alert count shown in the admin header."""

from __future__ import annotations

from django.http import HttpRequest

from profiles.admin_scoping import visible_to
from quotas.models import Alert


def unread_alerts(request: HttpRequest) -> dict[str, int]:
    """Counted once per request: an admin page renders several templates
    with the request's context, and each runs the context processors."""
    user = getattr(request, "user", None)
    if (
        user is None
        or not user.is_authenticated
        or not user.is_staff
        or not request.path.startswith("/admin/")
    ):
        return {}
    counted: tuple[object, int] | None = getattr(request, "_unread_alert_count", None)
    if counted is None or counted[0] != user.pk:
        alerts = visible_to(request, Alert.objects.filter(read_at__isnull=True))
        counted = (user.pk, alerts.count())
        request._unread_alert_count = counted  # type: ignore[attr-defined]
    return {"unread_alert_count": counted[1]}

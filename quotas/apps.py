from __future__ import annotations

from django.apps import AppConfig


class QuotasConfig(AppConfig):
    name = "quotas"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from profiles.signals import timezone_changed

        timezone_changed.connect(_rezone, dispatch_uid="quotas.budgets_rezone")


def _rezone(sender: object, organization: object, previous: str, **kwargs: object) -> None:
    from quotas.services import budgets_rezone

    budgets_rezone(org=organization, previous=previous)  # type: ignore[arg-type]

from __future__ import annotations

from django.apps import AppConfig


class CostsConfig(AppConfig):
    name = "costs"
    verbose_name = "AI costs"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # The limiter counts amounts without knowing the ledger; tell it where
        # past spend lives (dependency rule: quotas never imports costs).
        from costs.selectors.budget_spend import ledger_spend, ledger_spend_many
        from quotas.spend import register_spend_source

        register_spend_source(ledger_spend, ledger_spend_many)

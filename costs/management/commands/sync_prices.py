from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from costs.catalog.source import load_catalog
from costs.services.catalog import catalog_sync


class Command(BaseCommand):
    help = "Fill and refresh the global price catalog from genai-prices and our extras file."

    def handle(self, *args: Any, **opts: Any) -> None:
        stats = catalog_sync(catalog=load_catalog())
        self.stdout.write(
            f"providers +{stats.providers_created}, models +{stats.models_created} "
            f"~{stats.models_updated}, prices +{stats.prices_created} ~{stats.prices_updated} "
            f"={stats.prices_unchanged}"
        )
        for kept in stats.prices_kept_used:
            self.stdout.write(f"kept (already used by events, add a newer price instead): {kept}")

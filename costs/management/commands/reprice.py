from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from costs.services.reprice import usage_reprice
from profiles.models import Organization


class Command(BaseCommand):
    help = "Price unpriced usage events whose model now has a price (each exactly once)."

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--org", help="Only this organization (slug).")

    def handle(self, *args: Any, **opts: Any) -> None:
        org = None
        if opts.get("org"):
            org = Organization.objects.filter(slug=opts["org"]).first()
            if org is None:
                raise CommandError(f"No organization with slug {opts['org']!r}.")
        stats = usage_reprice(org=org)
        self.stdout.write(f"examined {stats.examined} unpriced events, repriced {stats.repriced}")

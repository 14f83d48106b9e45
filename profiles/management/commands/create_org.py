from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from profiles.services import organization_create


class Command(BaseCommand):
    help = "Create an organization (tenant), optionally with its owner."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--owner-email")
        parser.add_argument("--timezone", default="UTC")

    def handle(self, *args: Any, **opts: Any) -> None:
        try:
            org = organization_create(
                slug=opts["slug"],
                name=opts["name"],
                timezone_name=opts["timezone"],
                owner_email=opts.get("owner_email"),
            )
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc
        self.stdout.write(f"Created organization {org.slug} ({org.name}), timezone {org.timezone}.")
        if opts.get("owner_email"):
            self.stdout.write(
                f"Owner {opts['owner_email']} can log into /admin/ once a password is set: "
                f"python manage.py changepassword {opts['owner_email']}"
            )


def _messages(exc: ValidationError) -> str:
    if hasattr(exc, "error_dict"):
        return "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
    return " ".join(exc.messages)

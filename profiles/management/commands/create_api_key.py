from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from profiles.management.commands.create_org import _messages
from profiles.models import Organization
from profiles.services import api_key_create, parse_scopes, profile_get_or_create


class Command(BaseCommand):
    help = "Issue an API key for an organization. The secret is the last line printed, once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("org_slug")
        parser.add_argument("--profile", help="Bind the key to this profile (external_id).")
        parser.add_argument("--scopes", default="ingest,check,read")
        parser.add_argument("--name", default="")

    def handle(self, *args: Any, **opts: Any) -> None:
        org = Organization.objects.filter(slug=opts["org_slug"]).first()
        if org is None:
            raise CommandError(f"No organization with slug {opts['org_slug']!r}.")
        try:
            scopes = parse_scopes(opts["scopes"])  # validate before creating a profile
            with transaction.atomic():
                profile = (
                    profile_get_or_create(org=org, external_id=opts["profile"])
                    if opts.get("profile")
                    else None
                )
                issued = api_key_create(
                    org=org, name=opts["name"] or "CLI key", scopes=scopes, profile=profile
                )
        except ValidationError as exc:
            raise CommandError(_messages(exc)) from exc
        key = issued.api_key
        self.stdout.write(
            f"API key {key.name!r} for {org.slug}"
            + (f", profile {profile.external_id}" if profile else "")
            + f", scopes {','.join(key.scopes)}. Store it now; it is not shown again:"
        )
        self.stdout.write(issued.secret)

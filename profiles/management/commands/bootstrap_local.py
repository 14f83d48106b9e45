"""Local set-up for `make run`: a superuser whose login is printed, and a demo tenant."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command, get_commands
from django.core.management.base import BaseCommand, CommandError

from profiles.models import ApiKey, Membership, Organization
from profiles.services import api_key_create, membership_set, organization_create


class Command(BaseCommand):
    help = (
        "Create the local superuser and a demo tenant (idempotent). Refuses to run with DEBUG off."
    )

    def add_arguments(self, parser) -> None:  # noqa: ANN001
        parser.add_argument("--username", default="admin")

    def handle(self, *args: Any, **opts: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("bootstrap_local is for local development (DEBUG=True) only.")
        var = Path(settings.VAR_DIR)
        var.mkdir(parents=True, exist_ok=True)
        password_file = var / "local-admin-password.txt"
        User = get_user_model()
        username = opts["username"]
        user = User.objects.filter(username=username).first()
        if user is None or not password_file.exists():
            password = secrets.token_urlsafe(12)
            if user is None:
                user = User.objects.create_superuser(username, f"{username}@localhost", password)
            else:
                user.set_password(password)
                user.save()
            password_file.write_text(password + "\n")
        password = password_file.read_text().strip()

        org = Organization.objects.filter(slug="demo").first() or organization_create(
            slug="demo", name="Demo Inc.", timezone_name="UTC"
        )
        membership_set(org=org, user=user, role=Membership.Role.OWNER)
        key_file = var / "demo-api-key.txt"
        if (
            not key_file.exists()
            or not ApiKey.objects.filter(organization=org, revoked_at=None).exists()
        ):
            issued = api_key_create(org=org, name="demo key", scopes="ingest,check,read,manage")
            key_file.write_text(issued.secret + "\n")
        if "demo" in get_commands():
            call_command("demo", "--org", "demo", "--if-empty", stdout=self.stdout)
        self.stdout.write(
            "\n".join(
                [
                    "",
                    "Admin:    http://127.0.0.1:8000/admin/",
                    f"Login:    {username} / {password}",
                    "API docs: http://127.0.0.1:8000/api/docs/",
                    f"API key (demo tenant): {key_file.read_text().strip()}",
                    "",
                ]
            )
        )

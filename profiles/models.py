"""Tenancy and identity: organizations, their members, the profiles that spend
inside them, and the API keys client apps authenticate with."""

from __future__ import annotations

import re
import uuid
import zoneinfo
from decimal import Decimal
from functools import cached_property

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, URLValidator, validate_email
from django.db import models

from profiles.currencies import ISO_4217


class BaseModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


def validate_timezone(value: str) -> None:
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationError(f"Unknown time zone {value!r}.") from exc


def validate_currency(value: str) -> None:
    """An ISO 4217 code as the API's bodies carry it (``"currency": "USD"``)."""
    if value in ISO_4217:
        return
    if value.upper() in ISO_4217:
        raise ValidationError(f"Write the currency code in capitals: {value.upper()}.")
    raise ValidationError(f"{value!r} is not an ISO 4217 currency code (such as USD or EUR).")


def validate_address(email: str) -> None:
    """Raise ValidationError unless ``email`` is an e-mail address by
    Django's rules, save one: a one-letter top-level domain passes, as in the
    contract's own example, ``--owner-email a@b.c``."""
    try:
        validate_email(email)
    except ValidationError:
        local, _, domain = email.rpartition("@")
        if "." not in domain or not re.fullmatch(r"[a-z0-9]", domain.rsplit(".", 1)[1], re.I):
            raise
        validate_email(f"{local}@{domain}x")  # the same rules for all the rest


def alert_email_lines(value: str) -> list[str]:
    """The addresses an organization's ``alert_emails`` lists: one a line,
    blank lines skipped."""
    return [address for line in value.splitlines() if (address := line.strip())]


def validate_alert_emails(value: str) -> None:
    """Every line that is not blank is one e-mail address: the lines
    ``profiles.selectors.alert_recipients`` sends alerts to."""
    bad = []
    for address in alert_email_lines(value):
        try:
            validate_address(address)
        except ValidationError:
            bad.append(address)
    if bad:
        raise ValidationError(
            [f"{address!r} is not an e-mail address (one address a line)." for address in bad]
        )


def validate_spike_factor(value: Decimal) -> None:
    # A spike is a day above this many times its trailing average: at 1 every
    # day above the average would be one, below 1 even an ordinary day.
    if value <= 1:
        raise ValidationError(
            "A spike is a day well above its average: the factor must be more than 1 "
            "(3 alerts at three times the average)."
        )


class Organization(BaseModel):
    class FailMode(models.TextChoices):
        OPEN = "open", "Open (allow when the limiter fails)"
        CLOSED = "closed", "Closed (deny when the limiter fails)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC", validators=[validate_timezone])
    currency = models.CharField(
        max_length=3,
        default="USD",
        validators=[validate_currency],
        help_text="ISO 4217 code of the organization's amounts, such as USD.",
    )
    fail_mode = models.CharField(max_length=6, choices=FailMode.choices, default=FailMode.OPEN)
    allow_client_pricing = models.BooleanField(
        default=False,
        help_text="Trust a cost sent by the client even when the catalog prices the model.",
    )
    alert_emails = models.TextField(
        blank=True,
        validators=[validate_alert_emails],
        help_text="Extra alert recipients besides owners and admins, one per line.",
    )
    webhook_url = models.URLField(
        blank=True,
        validators=[URLValidator(schemes=["http", "https"])],
        help_text="Optional Slack-compatible webhook that receives every alert.",
    )
    webhook_secret = models.CharField(
        max_length=128, blank=True, help_text="Signs webhook posts (HMAC-SHA256 header)."
    )
    spike_factor = models.DecimalField(
        max_digits=6,
        decimal_places=2,
        default=3,
        validators=[validate_spike_factor],
        help_text=(
            "Alert when a day's spend exceeds this many times the trailing 7-day average "
            "(more than 1)."
        ),
    )
    spike_min_cost = models.DecimalField(
        max_digits=24,
        decimal_places=12,
        default=1,
        # 0 is no floor: every spike alerts. Below 0 would mean the same.
        validators=[
            MinValueValidator(Decimal(0), message="The minimum cost is an amount: 0 or more.")
        ],
        help_text=(
            "Ignore spikes below this amount (a $0.02 day after $0.005 days is noise); "
            "0 alerts on every spike."
        ),
    )
    # Goes up whenever what a request reads ahead of its write changes: the
    # organization's budgets, its periods' rows, its profiles' names, the
    # prices it can use, its time zone. Database triggers keep it (on
    # PostgreSQL; see profiles/migrations/0003), never the application, so a
    # process may keep that setup in memory for as long as the key lookup
    # reads the same version (costs.services.ahead). It never goes down.
    setup_version = models.BigIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(fail_mode__in=["open", "closed"]), name="org_fail_mode_valid"
            ),
            # validate_currency's list, so raw SQL and update() keep to it too.
            models.CheckConstraint(
                condition=models.Q(currency__in=sorted(ISO_4217)), name="org_currency_code"
            ),
            models.CheckConstraint(
                condition=models.Q(spike_factor__gt=1), name="org_spike_factor_above_one"
            ),
            models.CheckConstraint(
                condition=models.Q(spike_min_cost__gte=0), name="org_spike_min_cost_non_negative"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @cached_property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


class Membership(BaseModel):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        ADMIN = "admin", "Admin"
        MEMBER = "member", "Member"
        VIEWER = "viewer", "Viewer"

    MANAGING_ROLES = (Role.OWNER, Role.ADMIN)

    # No index of its own: the unique (user, organization) begins with it.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="memberships",
        db_index=False,
    )
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organization"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} @ {self.organization} ({self.role})"


class Profile(BaseModel):
    """A spender inside a tenant: an end user, workspace or project of the client app."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the unique (organization, external_id) begins with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="profiles", db_index=False
    )
    external_id = models.CharField(max_length=255)
    display_name = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["external_id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "external_id"], name="profile_external_id_unique"
            ),
        ]

    def __str__(self) -> str:
        return self.display_name or self.external_id


class ApiKey(BaseModel):
    """A client app's credential. Only the public prefix and a SHA-256 of the
    secret are stored; the full key ``sk_<prefix>_<secret>`` is shown once."""

    class Scope(models.TextChoices):
        INGEST = "ingest", "Ingest (record usage)"
        CHECK = "check", "Check (pre-flight)"
        READ = "read", "Read (dashboards, lists, export)"
        MANAGE = "manage", "Manage (budgets, alerts)"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="api_keys"
    )
    profile = models.ForeignKey(
        Profile,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="api_keys",
        help_text="A key bound to a profile acts only for that profile.",
    )
    name = models.CharField(max_length=200)
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    rate_limit_per_minute = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Requests per minute for this key; empty for the default, 0 for no limit.",
    )

    class Meta:
        verbose_name = "API key"
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} (sk_{self.prefix}_…)"

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

"""The AI-cost domain: the price catalog, the usage ledger and its daily rollups."""

from __future__ import annotations

import re
import uuid
from decimal import Decimal
from typing import Any, cast

from django.core.exceptions import ValidationError
from django.core.validators import DecimalValidator
from django.db import models
from django.db.models import Q

from costs.pricing.engine import METERS, Rates, Tier
from profiles.models import ApiKey, BaseModel, Organization, Profile

MONEY: dict[str, Any] = {"max_digits": 24, "decimal_places": 12}
# Sums of many events (rollups) get six more integer digits than one event.
MONEY_SUM: dict[str, Any] = {"max_digits": 30, "decimal_places": 12}
# Unit rates are per single token/character/second: $0.0375 per million tokens is
# 0.0000000375, so rates carry more places than amounts of money do.
RATE: dict[str, Any] = {"max_digits": 30, "decimal_places": 18, "null": True, "blank": True}
COUNT_METERS = [m for m in METERS if m != "audio_seconds"]


def validate_names(value: object) -> None:
    """Names as the catalog's index reads them (``costs.selectors.catalog``):
    a list of strings, each something a model could be called."""
    if not isinstance(value, list) or not all(
        isinstance(name, str) and name.strip() and "\x00" not in name for name in value
    ):
        raise ValidationError('Give a list of names, e.g. ["gpt-4o-2024-08-06"].')


def validate_regexes(value: object) -> None:
    validate_names(value)
    for pattern in cast("list[str]", value):
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValidationError(f"{pattern!r} is no regular expression: {exc}.") from exc


TIERS_FORMAT = (
    'Give a list of tiers, e.g. [{"threshold": 200000, "rates": {"input_tokens": "0.0000025"}}]: '
    "a whole number of input tokens, and decimal strings for the meters it re-prices."
)


def validate_tiers(value: object) -> None:
    """Tiers as pricing reads them (``costs.selectors.catalog.rates_of``), each
    rate within what a rate column holds: a row that passes can be priced with."""
    if not isinstance(value, list) or not all(isinstance(tier, dict) for tier in value):
        raise ValidationError(TIERS_FORMAT)
    try:
        Rates(rates={}, tiers=tuple(_tier(tier) for tier in value))
    except (TypeError, ValueError, ArithmeticError, ValidationError) as exc:
        reason = exc.messages[0] if isinstance(exc, ValidationError) else str(exc)
        raise ValidationError(f"{reason} {TIERS_FORMAT}") from exc


_RATE_DIGITS = DecimalValidator(RATE["max_digits"], RATE["decimal_places"])


def _tier(raw: dict[str, Any]) -> Tier:
    if set(raw) != {"threshold", "rates"} or not isinstance(raw["rates"], dict):
        raise ValueError("A tier has a threshold and a map of rates, nothing else.")
    rates: dict[str, Decimal] = {}
    for meter, rate in raw["rates"].items():
        if not isinstance(rate, str):
            raise TypeError(f"The rate of {meter} is not a string.")
        rates[meter] = Decimal(rate)  # InvalidOperation (an ArithmeticError) if it is no number
        if rates[meter].is_finite():
            _RATE_DIGITS(rates[meter])
    return Tier(threshold=raw["threshold"], rates=rates)


class Provider(BaseModel):
    catalog_global = True  # shared by every tenant: readable by all, edited by operators

    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.name or self.slug


class AIModel(BaseModel):
    """A priced model. Names resolve by exact slug, then aliases, then the
    longest matching prefix, then regular expressions (full match)."""

    catalog_global = True

    # No index of its own: the unique (provider, slug) begins with it.
    provider = models.ForeignKey(
        Provider, on_delete=models.CASCADE, related_name="models", db_index=False
    )
    slug = models.CharField(max_length=200)
    name = models.CharField(max_length=200, blank=True)
    aliases = models.JSONField(default=list, blank=True, validators=[validate_names])
    match_prefixes = models.JSONField(default=list, blank=True, validators=[validate_names])
    match_regexes = models.JSONField(default=list, blank=True, validators=[validate_regexes])
    position = models.PositiveIntegerField(
        default=0, help_text="Tie-break among regex matches: lower wins (catalog order)."
    )

    class Meta:
        verbose_name = "AI model"
        ordering = ["provider__slug", "position", "slug"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "slug"], name="aimodel_unique_slug"),
        ]

    def __str__(self) -> str:
        return f"{self.provider.slug}/{self.slug}"


class Price(BaseModel):
    """Unit prices of a model from ``effective_from`` on. A global row (no
    organization) is the public list price; a tenant's row overrides it for that
    tenant. Rows are never edited once an event used them: a change is a new row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the (model, organization, effective_from) index begins with it.
    model = models.ForeignKey(
        AIModel, on_delete=models.CASCADE, related_name="prices", db_index=False
    )
    organization = models.ForeignKey(
        Organization,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="price_overrides",
        help_text="Empty for the global catalog; set for a tenant's negotiated rate.",
    )
    effective_from = models.DateTimeField()
    input_tokens = models.DecimalField(**RATE, help_text="USD per input token")
    output_tokens = models.DecimalField(**RATE, help_text="USD per output token")
    cached_input_tokens = models.DecimalField(**RATE, help_text="USD per cached input token")
    cache_write_tokens = models.DecimalField(**RATE, help_text="USD per cache-write token")
    input_audio_tokens = models.DecimalField(**RATE, help_text="USD per input audio token")
    output_audio_tokens = models.DecimalField(**RATE, help_text="USD per output audio token")
    characters = models.DecimalField(**RATE, help_text="USD per character")
    images = models.DecimalField(**RATE, help_text="USD per image")
    audio_seconds = models.DecimalField(**RATE, help_text="USD per second of audio")
    requests = models.DecimalField(**RATE, help_text="USD per request")
    tiers = models.JSONField(
        default=list,
        blank=True,
        validators=[validate_tiers],
        help_text='[{"threshold": 200000, "rates": {"input_tokens": "0.0000025"}}]: above '
        "threshold input tokens, every unit of the named meters is billed at the tier rate.",
    )
    source = models.CharField(max_length=300, blank=True)

    class Meta:
        ordering = ["model", "-effective_from"]
        constraints = [
            # Two partial indexes rather than NULLS NOT DISTINCT, which SQLite lacks.
            models.UniqueConstraint(
                fields=["model", "effective_from"],
                condition=Q(organization__isnull=True),
                name="price_unique_start_global",
            ),
            models.UniqueConstraint(
                fields=["model", "organization", "effective_from"],
                condition=Q(organization__isnull=False),
                name="price_unique_start_org",
            ),
            *[
                models.CheckConstraint(
                    condition=Q(**{f"{m}__isnull": True}) | Q(**{f"{m}__gte": 0}),
                    name=f"price_{m}_non_negative",
                )
                for m in METERS
            ],
        ]
        indexes = [models.Index(fields=["model", "organization", "effective_from"])]

    def __str__(self) -> str:
        # organization_id set: the organization is there.
        scope = cast(Organization, self.organization).slug if self.organization_id else "global"
        return f"{self.model} from {self.effective_from:%Y-%m-%d} ({scope})"


def _meter_fields() -> dict[str, models.Field]:
    fields: dict[str, models.Field] = {m: models.BigIntegerField(default=0) for m in COUNT_METERS}
    fields["audio_seconds"] = models.DecimalField(max_digits=24, decimal_places=6, default=0)
    return fields


class UsageEvent(models.Model):
    """The ledger: one row per AI call, append-only. ``idempotency_key`` is unique
    per organization; ``request_hash`` tells a replay from a conflicting reuse."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the unique (organization, idempotency_key) and the
    # (organization, occurred_at) indexes serve every lookup by organization.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    profile = models.ForeignKey(
        Profile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    idempotency_key = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64)
    provider = models.CharField(max_length=100)
    model = models.CharField(
        max_length=200, help_text="The catalog model it resolved to, else as sent"
    )
    model_requested = models.CharField(max_length=200, help_text="The model name as sent")
    ai_model = models.ForeignKey(
        AIModel, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    operation = models.CharField(max_length=100, default="default")
    locals().update(_meter_fields())
    cost = models.DecimalField(**MONEY, default=0)
    cost_breakdown = models.JSONField(default=dict, blank=True)
    client_cost = models.DecimalField(**MONEY, null=True, blank=True)
    revenue = models.DecimalField(**MONEY, null=True, blank=True)
    # A price an event used is never deleted on its own; with its
    # organization, whose events go too (an override), it is.
    price = models.ForeignKey(
        Price, on_delete=models.RESTRICT, null=True, blank=True, related_name="+"
    )
    priced = models.BooleanField(default=True)
    reservation_id = models.UUIDField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField()
    day = models.DateField(help_text="occurred_at's date in the organization's time zone")

    class Meta:
        ordering = ["-occurred_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "idempotency_key"], name="usage_idempotency_unique"
            ),
            *[
                models.CheckConstraint(
                    condition=Q(**{f"{m}__gte": 0}), name=f"usage_{m}_non_negative"
                )
                for m in METERS
            ],
            models.CheckConstraint(condition=Q(cost__gte=0), name="usage_cost_non_negative"),
        ]
        indexes = [
            models.Index(fields=["organization", "-occurred_at"], name="usage_org_time"),
            models.Index(
                fields=["organization", "profile", "-occurred_at"], name="usage_org_profile_time"
            ),
            models.Index(
                fields=["organization", "occurred_at"],
                name="usage_unpriced",
                condition=Q(priced=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.cost} @ {self.occurred_at:%Y-%m-%d %H:%M}"


class DailyUsage(models.Model):
    """Rollup of the ledger per organization, local day, profile, provider, model
    and operation, kept current in the ingestion transaction, so dashboards never
    scan the ledger."""

    # No index of its own: the (organization, day) index begins with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    day = models.DateField()
    profile = models.ForeignKey(
        Profile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    provider = models.CharField(max_length=100)
    model = models.CharField(max_length=200)
    operation = models.CharField(max_length=100)
    events = models.BigIntegerField(default=0)
    unpriced_events = models.BigIntegerField(default=0)
    locals().update(_meter_fields())
    cost = models.DecimalField(**MONEY_SUM, default=0)
    revenue = models.DecimalField(**MONEY_SUM, default=0)

    class Meta:
        verbose_name_plural = "daily usage"
        constraints = [
            # Partial indexes rather than NULLS NOT DISTINCT (SQLite lacks it); the
            # upsert names the matching one by its predicate.
            models.UniqueConstraint(
                fields=["organization", "day", "profile", "provider", "model", "operation"],
                condition=Q(profile__isnull=False),
                name="daily_usage_unique_profile",
            ),
            models.UniqueConstraint(
                fields=["organization", "day", "provider", "model", "operation"],
                condition=Q(profile__isnull=True),
                name="daily_usage_unique_org",
            ),
        ]
        indexes = [models.Index(fields=["organization", "day"], name="daily_org_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.provider}/{self.model} {self.cost}"

"""The limiter engine's state: budgets, their period counters and reservations."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q

from profiles.models import ApiKey, BaseModel, Organization, Profile

AMOUNT: dict[str, Any] = {"max_digits": 24, "decimal_places": 12}
# Counters accumulate many events: six more integer digits than one amount.
COUNTER: dict[str, Any] = {"max_digits": 30, "decimal_places": 12}


def validate_thresholds(value: object) -> None:
    if not isinstance(value, list) or not value:
        raise ValidationError("Give a list of percentages, e.g. [80, 100].")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 1000:
            raise ValidationError("Each threshold is a whole percentage from 1 to 1000.")
    if len(set(value)) != len(value):
        raise ValidationError("Thresholds must be distinct.")


def default_thresholds() -> list[int]:
    return [80, 100]


class Budget(BaseModel):
    """A limit on one metric over a recurring period, for the usage its scope
    filters match (an empty filter matches everything)."""

    class Metric(models.TextChoices):
        COST = "cost", "Cost"
        REQUESTS = "requests", "Requests"
        INPUT_TOKENS = "input_tokens", "Input tokens"
        OUTPUT_TOKENS = "output_tokens", "Output tokens"
        TOTAL_TOKENS = "total_tokens", "Total tokens"
        IMAGES = "images", "Images"
        CHARACTERS = "characters", "Characters"
        AUDIO_SECONDS = "audio_seconds", "Audio seconds"

    class Period(models.TextChoices):
        DAILY = "daily", "Daily"
        WEEKLY = "weekly", "Weekly (from Monday)"
        MONTHLY = "monthly", "Monthly"
        TOTAL = "total", "Total (never resets)"

    class Action(models.TextChoices):
        BLOCK = "block", "Block (deny pre-flight checks)"
        WARN = "warn", "Warn only"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="budgets")
    name = models.CharField(max_length=200)
    profile = models.ForeignKey(
        Profile, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.CASCADE, null=True, blank=True, related_name="budgets"
    )
    provider = models.CharField(max_length=100, blank=True)
    model = models.CharField(max_length=200, blank=True)
    operation = models.CharField(max_length=100, blank=True)
    metric = models.CharField(max_length=20, choices=Metric.choices, default=Metric.COST)
    period = models.CharField(max_length=10, choices=Period.choices, default=Period.MONTHLY)
    limit = models.DecimalField(**AMOUNT)
    thresholds = models.JSONField(default=default_thresholds, validators=[validate_thresholds])
    action = models.CharField(max_length=5, choices=Action.choices, default=Action.BLOCK)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(condition=Q(limit__gt=0), name="budget_limit_positive"),
            models.CheckConstraint(
                condition=Q(
                    metric__in=[
                        "cost",
                        "requests",
                        "input_tokens",
                        "output_tokens",
                        "total_tokens",
                        "images",
                        "characters",
                        "audio_seconds",
                    ]
                ),
                name="budget_metric_valid",
            ),
            models.CheckConstraint(
                condition=Q(period__in=["daily", "weekly", "monthly", "total"]),
                name="budget_period_valid",
            ),
            models.CheckConstraint(
                condition=Q(action__in=["block", "warn"]), name="budget_action_valid"
            ),
        ]
        # Active budgets by organization, and within it by profile: the checks read
        # only the budgets that may match, and an organization may hold one per profile.
        indexes = [
            models.Index(
                fields=["organization", "profile"],
                name="budget_active_org_profile",
                condition=Q(active=True),
            )
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        super().clean()
        errors: dict[str, str] = {}
        # A limit of 2.5 requests would be shown, and enforced, as 2.
        if (
            self.counts_whole
            and self.limit is not None
            and self.limit != self.limit.to_integral_value()
        ):
            errors["limit"] = f"A {self.metric} budget's limit is a whole number."
        # Its usage is its organization's: a profile or key of another one would
        # never match, and the row would tie two tenants together.
        for name in ("profile", "api_key"):
            scope = getattr(self, name) if getattr(self, f"{name}_id") is not None else None
            if scope is not None and scope.organization_id != self.organization_id:
                errors[name] = f"The {name.replace('_', ' ')} belongs to another organization."
        if errors:
            raise ValidationError(errors)

    @property
    def is_money(self) -> bool:
        return self.metric == "cost"

    @property
    def counts_whole(self) -> bool:
        """Calls, tokens, images and characters come whole; money and audio
        seconds do not."""
        return self.metric not in (self.Metric.COST, self.Metric.AUDIO_SECONDS)


class BudgetPeriod(models.Model):
    """The counters of one budget over one period. A new period is a new row,
    computed from the clock: nothing ever zeroes a counter."""

    # No index of its own: the unique (budget, start) serves every lookup by budget.
    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, related_name="periods", db_index=False
    )
    start = models.DateTimeField()
    end = models.DateTimeField()
    spent = models.DecimalField(**COUNTER, default=0)
    reserved = models.DecimalField(**COUNTER, default=0)
    opened_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-start"]
        constraints = [
            models.UniqueConstraint(fields=["budget", "start"], name="period_unique_start"),
            models.CheckConstraint(condition=Q(spent__gte=0), name="period_spent_non_negative"),
            models.CheckConstraint(
                condition=Q(reserved__gte=0), name="period_reserved_non_negative"
            ),
            models.CheckConstraint(condition=Q(end__gt=F("start")), name="period_end_after_start"),
        ]

    def __str__(self) -> str:
        return f"{self.budget} from {self.start:%Y-%m-%d}"


class Reservation(models.Model):
    """A hold taken by a pre-flight check on every block budget that applies."""

    class Status(models.TextChoices):
        HELD = "held", "Held"
        SETTLED = "settled", "Settled"
        RELEASED = "released", "Released"
        EXPIRED = "expired", "Expired"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="+")
    profile = models.ForeignKey(
        Profile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    api_key = models.ForeignKey(
        ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.HELD)
    estimate = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            # A refused reservation probes its organization's stale holds: led by
            # the organization, so a busy tenant's churn never slows another's probe.
            models.Index(
                fields=["organization", "expires_at"],
                name="reservation_held_org_expiry",
                condition=Q(status="held"),
            ),
        ]

    def __str__(self) -> str:
        return f"reservation {self.id} ({self.status})"


class ReservationHold(models.Model):
    reservation = models.ForeignKey(Reservation, on_delete=models.CASCADE, related_name="holds")
    period = models.ForeignKey(BudgetPeriod, on_delete=models.CASCADE, related_name="holds")
    amount = models.DecimalField(**AMOUNT)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(amount__gte=0), name="hold_amount_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} on {self.period}"


class Alert(models.Model):
    """Something an admin should hear about. ``dedup_key`` is unique per
    organization, so evaluating twice (or from two workers at once) can never
    make two alerts for the same budget, period and threshold."""

    class Kind(models.TextChoices):
        THRESHOLD_REACHED = "threshold_reached", "Threshold reached"
        BUDGET_EXCEEDED = "budget_exceeded", "Budget exceeded"
        DAILY_SUMMARY = "daily_summary", "Daily summary"
        UNPRICED_USAGE = "unpriced_usage", "Unpriced usage"
        SPEND_SPIKE = "spend_spike", "Spend spike"
        RECONCILIATION_DRIFT = "reconciliation_drift", "Counter drift repaired"

    class Severity(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        CRITICAL = "critical", "Critical"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # No index of its own: the (organization, created_at) index begins with it.
    organization = models.ForeignKey(
        Organization, on_delete=models.CASCADE, related_name="alerts", db_index=False
    )
    budget = models.ForeignKey(
        Budget, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    period = models.ForeignKey(
        BudgetPeriod, on_delete=models.CASCADE, null=True, blank=True, related_name="alerts"
    )
    profile = models.ForeignKey(
        Profile, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    threshold = models.PositiveIntegerField(null=True, blank=True)
    severity = models.CharField(max_length=10, choices=Severity.choices, default=Severity.INFO)
    title = models.CharField(max_length=300)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)
    dedup_key = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    read_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["organization", "dedup_key"], name="alert_dedup_unique"
            ),
            models.UniqueConstraint(
                fields=["budget", "period", "threshold"],
                condition=Q(budget__isnull=False, threshold__isnull=False),
                name="alert_one_per_budget_period_threshold",
            ),
        ]
        indexes = [
            models.Index(fields=["organization", "-created_at"], name="alert_org_created"),
            models.Index(
                fields=["organization"], name="alert_org_unread", condition=Q(read_at__isnull=True)
            ),
        ]

    def __str__(self) -> str:
        return self.title


class Delivery(models.Model):
    """One alert to one recipient on one channel. Claimed with a lease before
    sending and marked sent after; a sent delivery is never sent again."""

    class Channel(models.TextChoices):
        EMAIL = "email", "Email"
        WEBHOOK = "webhook", "Webhook"

    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        SENDING = "sending", "Sending"
        SENT = "sent", "Sent"
        FAILED = "failed", "Failed (gave up)"

    # No index of its own: the unique (alert, channel, target) begins with it.
    alert = models.ForeignKey(
        Alert, on_delete=models.CASCADE, related_name="deliveries", db_index=False
    )
    channel = models.CharField(max_length=10, choices=Channel.choices)
    target = models.CharField(max_length=500)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)
    next_attempt_at = models.DateTimeField()
    lease_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "deliveries"
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["alert", "channel", "target"], name="delivery_unique_target"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                name="delivery_due",
                condition=Q(status__in=["pending", "sending"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.channel} to {self.target} ({self.status})"

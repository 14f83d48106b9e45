from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from unfold.admin import ModelAdmin, TabularInline

from profiles.admin_scoping import ReadOnlyAdminMixin, TenantInlineMixin, TenantScopedAdminMixin
from profiles.admin_widgets import KeyCheckedAutocompleteMixin
from profiles.models import Organization
from profiles.tenancy import orgs_managed_by
from quotas import admin_beat  # noqa: F401 - registers the beat schedule's pages
from quotas.alerts import alert_mark_read, alert_resolve
from quotas.models import Alert, Budget, BudgetPeriod, Delivery, Reservation
from quotas.selectors import bar_level, budget_states, budget_status
from quotas.services import budget_create, budget_update, budgets_delete, reservation_release

BAR_COLORS = {"ok": "#16a34a", "warn": "#d97706", "over": "#dc2626"}


def progress_bar(percent: Decimal, thresholds: list[int]) -> str:
    """A bar colored at the budget's alert thresholds."""
    color = BAR_COLORS[bar_level(percent, thresholds)]
    width = max(Decimal(0), min(percent, Decimal(100)))
    return format_html(
        '<div class="budget-bar" title="{}%" style="width:140px;height:10px;background:#e5e7eb;'
        'border-radius:5px;overflow:hidden"><div style="width:{}%;height:100%;background:{}"></div>'
        "</div>",
        f"{percent:.1f}",
        f"{width:.1f}",
        color,
    )


class ReadOnlyInline(TenantInlineMixin, TabularInline):
    """Rows listed under their parent, never added, changed or deleted there.
    Adding is refused too, not only left out of the page: a tampered
    INITIAL_FORMS would otherwise post a listed row back as a new one."""

    extra = 0
    max_num = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class BudgetPeriodInline(ReadOnlyInline):
    model = BudgetPeriod
    fields = ["start", "end", "spent", "reserved", "opened_at"]
    readonly_fields = fields
    ordering = ["-start"]


@admin.register(Budget)
class BudgetAdmin(KeyCheckedAutocompleteMixin, TenantScopedAdminMixin, ModelAdmin):
    list_display = [
        "name",
        "organization",
        "scope",
        "metric",
        "period",
        "limit",
        "action",
        "current",
        "usage_bar",
        "active",
    ]
    list_filter = ["metric", "period", "action", "active"]
    list_select_related = ["organization", "profile", "api_key"]
    search_fields = ["name", "profile__external_id"]
    autocomplete_fields = ["profile"]
    inlines = [BudgetPeriodInline]
    fields = [
        "organization",
        "name",
        "profile",
        "api_key",
        "provider",
        "model",
        "operation",
        "metric",
        "period",
        "limit",
        "thresholds",
        "action",
        "active",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Its periods count its organization's usage and hold for its
        # reservations: moved, they would count and hold across tenants.
        return ["organization"] if obj is not None else []

    @staticmethod
    def _status(obj: Budget) -> dict[str, Any]:
        # Cached on the row object: both columns of one row read it once.
        # _status_cache is our own attribute on the instance, unknown to its model.
        if not hasattr(obj, "_status_cache"):
            (state,) = budget_states(org=obj.organization, budgets=[obj])
            obj._status_cache = budget_status(state)  # type: ignore[attr-defined]
        return obj._status_cache  # type: ignore[attr-defined]

    @admin.display(description="Scope")
    def scope(self, obj: Budget) -> str:
        parts = [
            # Each relation is read only when its id is set, so it is not None.
            f"profile {obj.profile.external_id}" if obj.profile_id else "",  # type: ignore[union-attr]
            f"key {obj.api_key.name}" if obj.api_key_id else "",  # type: ignore[union-attr]
            obj.provider,
            obj.model,
            obj.operation,
        ]
        return ", ".join(p for p in parts if p) or "whole organization"

    @admin.display(description="This period")
    def current(self, obj: Budget) -> str:
        status = self._status(obj)
        return f"{status['spent']} / {status['limit']}"

    @admin.display(description="Used")
    def usage_bar(self, obj: Budget) -> str:
        status = self._status(obj)
        return progress_bar(
            Decimal(status["percent_used"]), obj.thresholds
        )  # display only, not money

    def save_model(self, request: HttpRequest, obj: Budget, form: Any, change: bool) -> None:
        from costs.selectors.catalog import model_canonical  # the admin may use any app

        if obj.model:
            obj.model = model_canonical(model=obj.model, provider=obj.provider)
            if "model" in form.cleaned_data:
                form.cleaned_data["model"] = obj.model
        if change:
            changes = {name: form.cleaned_data[name] for name in form.changed_data}
            obj.refresh_from_db()
            budget_update(budget=obj, **changes)
        else:
            fields = {f: getattr(obj, f) for f in self.fields if f != "organization"}
            created = budget_create(org=obj.organization, **fields)
            obj.pk = created.pk

    def delete_model(self, request: HttpRequest, obj: Budget) -> None:
        budgets_delete(budgets=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Budget]) -> None:
        budgets_delete(budgets=list(queryset))


@admin.register(Reservation)
class ReservationAdmin(TenantScopedAdminMixin, ModelAdmin):
    list_display = ["id", "organization", "profile", "status", "created_at", "expires_at"]
    list_filter = ["status"]
    list_select_related = ["organization", "profile"]
    actions = ["release"]
    readonly_fields = [
        "organization",
        "profile",
        "api_key",
        "status",
        "estimate",
        "created_at",
        "expires_at",
        "ended_at",
    ]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    @admin.action(description="Release selected holds")
    def release(self, request: HttpRequest, queryset: QuerySet[Reservation]) -> None:
        count = 0
        managed = orgs_managed_by(request.user)
        for reservation in queryset.filter(
            status=Reservation.Status.HELD, organization__in=managed
        ):
            reservation_release(org=reservation.organization, reservation_id=reservation.pk)
            count += 1
        self.message_user(request, f"Released {count} reservation(s).", messages.SUCCESS)


class UnreadFilter(admin.SimpleListFilter):
    title = "read"
    parameter_name = "unread"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1", "Unread"), ("0", "Read")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if self.value() == "1":
            return queryset.filter(read_at__isnull=True)
        if self.value() == "0":
            return queryset.filter(read_at__isnull=False)
        return queryset


class DeliveryInline(ReadOnlyInline):
    model = Delivery
    fields = ["channel", "target", "status", "attempts", "last_error", "sent_at"]
    readonly_fields = fields


@admin.register(Alert)
class AlertAdmin(TenantScopedAdminMixin, ModelAdmin):
    list_display = [
        "created_at",
        "organization",
        "severity",
        "kind",
        "title",
        "read_at",
        "resolved_at",
    ]
    list_filter = [UnreadFilter, "kind", "severity"]
    list_select_related = ["organization"]
    search_fields = ["title", "message"]
    readonly_fields = [
        "organization",
        "kind",
        "severity",
        "title",
        "message",
        "budget",
        "period",
        "profile",
        "threshold",
        "data",
        "created_at",
        "read_at",
        "resolved_at",
    ]
    exclude = ["dedup_key"]
    inlines = [DeliveryInline]
    actions = ["mark_read", "mark_resolved"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def _managed(self, request: HttpRequest, queryset: QuerySet[Alert]) -> QuerySet[Alert]:
        if request.user.is_superuser:
            return queryset
        return queryset.filter(organization__in=orgs_managed_by(request.user))

    @admin.action(description="Mark selected alerts read")
    def mark_read(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = 0
        for org_id in (
            self._managed(request, queryset).values_list("organization", flat=True).distinct()
        ):
            ids = list(queryset.filter(organization_id=org_id).values_list("pk", flat=True))
            count += alert_mark_read(org=Organization(pk=org_id), alert_ids=ids)
        self.message_user(request, f"Marked {count} alert(s) read.", messages.SUCCESS)

    @admin.action(description="Mark selected alerts resolved")
    def mark_resolved(self, request: HttpRequest, queryset: QuerySet[Alert]) -> None:
        count = 0
        for org_id in (
            self._managed(request, queryset).values_list("organization", flat=True).distinct()
        ):
            ids = list(queryset.filter(organization_id=org_id).values_list("pk", flat=True))
            count += alert_resolve(org=Organization(pk=org_id), alert_ids=ids)
        self.message_user(request, f"Resolved {count} alert(s).", messages.SUCCESS)


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, TenantScopedAdminMixin, ModelAdmin):
    org_path = "alert__organization"
    list_display = ["created_at", "alert", "channel", "target", "status", "attempts", "sent_at"]
    list_filter = ["channel", "status"]
    list_select_related = ["alert"]
    readonly_fields = [
        "alert",
        "channel",
        "target",
        "status",
        "attempts",
        "last_error",
        "next_attempt_at",
        "lease_until",
        "sent_at",
        "created_at",
    ]

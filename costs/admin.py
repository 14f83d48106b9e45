from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Model, ProtectedError, Q, QuerySet, RestrictedError
from django.http import HttpRequest, StreamingHttpResponse
from unfold.admin import ModelAdmin, TabularInline
from unfold.paginator import InfinitePaginator

from costs.admin_filters import LedgerChangeList, ProfileFilter, ProviderFilter
from costs.exports import csv_rows
from costs.models import AIModel, DailyUsage, Price, Provider, UsageEvent
from costs.pricing.engine import METERS
from costs.selectors.catalog import catalog_cache_clear
from costs.services.catalog import catalog_gate_take, price_is_used
from costs.services.reprice import usage_reprice
from profiles.admin_scoping import (
    FormCountCapMixin,
    GlobalCatalogAdminMixin,
    ReadOnlyAdminMixin,
    TenantScopedAdminMixin,
    is_tenant_staff,
)
from profiles.admin_widgets import KeyCheckedAutocompleteMixin
from profiles.tenancy import orgs_managed_by, orgs_visible_to


class CatalogGateMixin:
    """Deletes catalog rows, and saves changes to them (a model's unique
    columns), after taking the catalog's gate for itself (``catalog_gate_take``):
    the large batches in flight finish first, the ones arriving wait. A row
    that usage recorded meanwhile has come to use is refused (403), as the
    delete page refuses one already in use, not a server error."""

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        with transaction.atomic():
            if change:
                catalog_gate_take()
            super().save_model(request, obj, form, change)  # type: ignore[misc]

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with _refused_if_used(), transaction.atomic():
            catalog_gate_take()
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with _refused_if_used(), transaction.atomic():
            catalog_gate_take()
            super().delete_queryset(request, queryset)  # type: ignore[misc]


@contextmanager
def _refused_if_used() -> Iterator[None]:
    try:
        yield
    except (ProtectedError, RestrictedError) as exc:
        raise PermissionDenied("Recorded usage uses it now; nothing was deleted.") from exc


@admin.register(Provider)
class ProviderAdmin(CatalogGateMixin, GlobalCatalogAdminMixin, ModelAdmin):
    list_display = ["slug", "name"]
    search_fields = ["slug", "name"]

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        catalog_cache_clear()


class PriceInline(FormCountCapMixin, TabularInline):
    """A model's price history: global rows and the viewer's own overrides."""

    model = Price
    extra = 0
    fields = [
        "effective_from",
        "organization",
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "characters",
        "images",
        "audio_seconds",
        "tiers",
    ]
    readonly_fields = fields
    ordering = ["-effective_from"]
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Price]:
        qs = super().get_queryset(request).select_related("organization")
        if request.user.is_superuser:
            return qs
        return qs.filter(
            Q(organization__isnull=True) | Q(organization__in=orgs_visible_to(request.user))
        )

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Whoever may read the catalog reads its history; get_queryset scopes the rows.
        return is_tenant_staff(request)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AIModel)
class AIModelAdmin(CatalogGateMixin, GlobalCatalogAdminMixin, ModelAdmin):
    list_display = ["slug", "provider", "name", "position"]
    list_filter = ["provider"]
    list_select_related = ["provider"]
    search_fields = ["slug", "name", "aliases"]
    inlines = [PriceInline]
    show_full_result_count = False

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        super().save_model(request, obj, form, change)
        catalog_cache_clear()


class PriceScopeFilter(admin.SimpleListFilter):
    title = "scope"
    parameter_name = "scope"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("global", "Global catalog"), ("override", "Organization overrides")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Price]) -> QuerySet[Price]:
        if self.value() == "global":
            return queryset.filter(organization__isnull=True)
        if self.value() == "override":
            return queryset.filter(organization__isnull=False)
        return queryset


@admin.register(Price)
class PriceAdmin(CatalogGateMixin, KeyCheckedAutocompleteMixin, TenantScopedAdminMixin, ModelAdmin):
    """Global rows are readable by every member and changed by superusers; a
    tenant's admins add and edit its overrides. A price an event used is frozen:
    a change is a new row with a later effective_from."""

    global_rows_readable = True
    list_display = [
        "model",
        "organization",
        "effective_from",
        "input_tokens",
        "output_tokens",
        "characters",
        "images",
        "audio_seconds",
        "source",
    ]
    list_filter = [PriceScopeFilter]
    list_select_related = ["model__provider", "organization"]
    search_fields = ["model__slug", "model__provider__slug"]
    autocomplete_fields = ["model"]
    show_full_result_count = False
    fields = ["model", "organization", "effective_from", *METERS, "tiers", "source"]

    def get_readonly_fields(self, request: HttpRequest, obj: Price | None = None) -> list[str]:
        if obj is not None and price_is_used(price=obj):
            return self.fields
        return []

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any):
        field = super().formfield_for_foreignkey(db_field, request, **kwargs)
        if db_field.name == "organization" and not request.user.is_superuser:
            field.required = True  # tenant admins write overrides, never global rows
            field.empty_label = None
        return field

    # ``obj`` is typed as the mixin's (any model) to keep the override compatible;
    # this admin is only ever handed Price rows.
    def has_change_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        price = cast("Price | None", obj)
        if price is not None and price.organization_id is None:
            return request.user.is_superuser
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Model | None = None) -> bool:
        price = cast("Price | None", obj)
        if price is not None and price_is_used(price=price):
            return False
        return self.has_change_permission(request, obj)

    def save_model(self, request: HttpRequest, obj: Price, form: Any, change: bool) -> None:
        if not request.user.is_superuser and obj.organization_id is None:
            raise PermissionError("Only operators change the global catalog.")
        super().save_model(request, obj, form, change)
        catalog_cache_clear()


@admin.register(UsageEvent)
class UsageEventAdmin(ReadOnlyAdminMixin, TenantScopedAdminMixin, ModelAdmin):
    """The ledger, read-only: usage is append-only."""

    list_display = [
        "occurred_at",
        "organization",
        "profile",
        "provider",
        "model",
        "operation",
        "cost",
        "priced",
    ]
    # Choices from the rollups and a search box: nothing here scans the ledger.
    list_filter = [
        "priced",
        ProviderFilter,
        ("profile", ProfileFilter),
        "occurred_at",
    ]
    list_filter_submit = True  # the provider and profile filters are form fields
    # Ordering by another column reads and sorts all of an organization's
    # events (566 ms at 500,000); time order walks its index.
    sortable_by = ["occurred_at"]

    list_select_related = ["organization", "profile"]
    search_fields = ["idempotency_key", "model", "model_requested"]
    date_hierarchy = None
    paginator = InfinitePaginator
    show_full_result_count = False
    list_per_page = 100
    actions = ["export_csv", "reprice"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[LedgerChangeList]:
        return LedgerChangeList

    def get_list_filter(self, request: HttpRequest) -> list[Any]:
        filters = list(self.list_filter)
        if request.user.is_superuser:
            filters.append("organization")
        return filters

    @admin.action(description="Export selected events as CSV")
    def export_csv(
        self, request: HttpRequest, queryset: QuerySet[UsageEvent]
    ) -> StreamingHttpResponse:
        response = StreamingHttpResponse(
            csv_rows(queryset.select_related("profile").order_by("-occurred_at", "-id")),
            content_type="text/csv",
        )
        response["Content-Disposition"] = 'attachment; filename="usage.csv"'
        return response

    @admin.action(description="Reprice selected unpriced events")
    def reprice(self, request: HttpRequest, queryset: QuerySet[UsageEvent]) -> None:
        allowed = queryset.filter(priced=False)
        if not request.user.is_superuser:
            allowed = allowed.filter(organization__in=orgs_managed_by(request.user))
        stats = usage_reprice(event_ids=list(allowed.values_list("id", flat=True)[:100_000]))
        self.message_user(
            request,
            f"Repriced {stats.repriced} of {stats.examined} unpriced event(s); the rest still "
            "have no price in force at their time.",
            messages.SUCCESS if stats.repriced else messages.WARNING,
        )


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdminMixin, TenantScopedAdminMixin, ModelAdmin):
    list_display = [
        "day",
        "organization",
        "profile",
        "provider",
        "model",
        "operation",
        "events",
        "cost",
        "unpriced_events",
    ]
    list_filter = ["day", ProviderFilter]
    list_filter_submit = True
    list_select_related = ["organization", "profile"]
    paginator = InfinitePaginator
    show_full_result_count = False

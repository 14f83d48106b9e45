from __future__ import annotations

import json
from collections.abc import Iterable
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest
from unfold.admin import ModelAdmin
from unfold.forms import (
    AdminPasswordChangeForm,
    UserChangeForm,
    UserCreationForm,
)

from profiles.admin_memberships import KeepsOwnersOnDeleteAdmin, MembershipInline
from profiles.admin_scoping import TenantScopedAdminMixin
from profiles.models import ApiKey, Organization, Profile
from profiles.services import (
    api_key_prepare,
    api_key_revoke,
    organization_save,
    organizations_lock,
    parse_scopes,
    users_delete,
    users_owner_check,
)
from profiles.tenancy import orgs_managed_by

# Users and groups span tenants: superusers only, styled like the rest.
admin.site.unregister(User)
admin.site.unregister(Group)


class OwnerUserChangeForm(UserChangeForm):
    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean() returns cleaned_data
        # Deactivated, an organization's last owner could no longer log in
        # to manage it. The check's locks are held until the admin's
        # transaction saves the change.
        if "is_active" in self.changed_data and not data.get("is_active"):
            try:
                users_owner_check(users=[self.instance])
            except ValidationError as exc:
                self.add_error("is_active", exc)
        return data


@admin.register(User)
class UserAdmin(BaseUserAdmin, KeepsOwnersOnDeleteAdmin):
    form = OwnerUserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm

    # Deleting an account deletes its memberships: refused for an
    # organization's last owner on the delete page and in the bulk deletion
    # (with the reason), and by the deletion itself (``users_delete``).
    def owner_check(self, request: HttpRequest, objs: Iterable[User]) -> None:
        users_owner_check(users=objs)

    def delete_model(self, request: HttpRequest, obj: User) -> None:
        users_delete(users=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        users_delete(users=queryset)


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ModelAdmin):
    pass


class LocksOrganizationsOnDeleteMixin:
    """Deletes rows whose deletion reaches budgets and their periods (a key's,
    an organization's) after locking their organizations, the first lock of
    every change to an organization's setup (``organizations_lock``): the
    periods first and the organization after (the setup-version triggers)
    would deadlock with a time zone change."""

    # How the budgets and reservations the deletion reaches refer to the rows
    # deleted ("organization", "api_key").
    budgets_by = "organization"

    def _organization_of(self, obj: Any) -> object:
        return obj.organization_id

    def _lock_budget_rows(self, deleted: QuerySet[Any]) -> None:
        """Then their reservations and period rows, in the counter writers'
        order (``budget_rows_lock``), before the cascade takes them in its own."""
        from quotas.models import Budget, Reservation
        from quotas.services import budget_rows_lock

        reached = {f"{self.budgets_by}__in": deleted}
        budget_rows_lock(
            budgets=Budget.objects.filter(**reached),
            reservations=Reservation.objects.filter(**reached),
        )

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            organizations_lock({self._organization_of(obj)})
            self._lock_budget_rows(type(obj)._default_manager.filter(pk=obj.pk))
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            orgs = {self._organization_of(obj) for obj in queryset}
            organizations_lock(orgs)
            self._lock_budget_rows(queryset)
            super().delete_queryset(request, queryset)  # type: ignore[misc]


@admin.register(Organization)
class OrganizationAdmin(LocksOrganizationsOnDeleteMixin, TenantScopedAdminMixin, ModelAdmin):
    org_path = ""
    list_display = ["name", "slug", "timezone", "currency", "fail_mode", "created_at"]
    search_fields = ["name", "slug"]
    inlines = [MembershipInline]
    # A webhook address typed without a scheme is an https one (Django 6's
    # default; 5.2 warns and assumes http).
    formfield_overrides = {models.URLField: {"assume_scheme": "https"}}

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # The slug names the tenant in URLs and keys' tooling: only operators change it.
        return [] if request.user.is_superuser else ["slug", "currency"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def _organization_of(self, obj: Any) -> object:
        return obj.pk

    def save_model(self, request: HttpRequest, obj: Organization, form: Any, change: bool) -> None:
        if change:
            organization_save(org=obj)  # a new time zone moves the budgets' periods
        else:
            super().save_model(request, obj, form, change)


@admin.register(Profile)
class ProfileAdmin(TenantScopedAdminMixin, ModelAdmin):
    list_display = ["external_id", "display_name", "organization", "active", "created_at"]
    list_filter = ["active"]
    list_select_related = ["organization"]
    search_fields = ["external_id", "display_name"]
    fields = ["organization", "external_id", "display_name", "active", "quota_and_usage"]
    readonly_fields = ["quota_and_usage"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Its events, rollups, keys and budgets stay in its organization: moved,
        # they would point across tenants. As a key's, its tenant never changes.
        if obj is not None:
            return ["organization", *self.readonly_fields]
        return self.readonly_fields

    # Deleting goes through the service that keeps the rollups equal to the
    # ledger (a deleted profile's events stay, without a profile).
    def save_model(self, request: HttpRequest, obj: Profile, form: Any, change: bool) -> None:
        with transaction.atomic():
            # The organization first, as every change to its setup (a rename
            # or a switch off bumps its version).
            organizations_lock([obj.organization_id])
            if change and not Profile.objects.filter(pk=obj.pk).exists():
                # Deleted while this change waited: saving would insert it again.
                messages.error(request, "This profile was deleted meanwhile; nothing was saved.")
                return
            super().save_model(request, obj, form, change)

    def delete_model(self, request: HttpRequest, obj: Profile) -> None:
        from costs.services.profiles import profiles_delete

        profiles_delete(profiles=[obj])

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Profile]) -> None:
        from costs.services.profiles import profiles_delete

        profiles_delete(profiles=list(queryset))

    @admin.display(description="Quota and usage this month")
    def quota_and_usage(self, obj: Profile) -> str:
        if obj.pk is None:
            return "—"
        from django.utils.html import format_html, format_html_join
        from django.utils.safestring import mark_safe

        from costs.selectors.analytics import money, profile_daily_chart, profile_month_spend
        from quotas.admin import progress_bar
        from quotas.selectors import budget_list, budget_states, budget_status

        spend = profile_month_spend(profile=obj)
        chart = json.dumps(profile_daily_chart(profile=obj))
        budgets = list(budget_list(org=obj.organization, profile=obj))
        rows = [budget_status(s) for s in budget_states(org=obj.organization, budgets=budgets)]
        items = format_html_join(
            "",
            "<li>{} ({} {}): {} of {} {}</li>",
            (
                (
                    r["name"],
                    r["period"],
                    r["metric"],
                    r["spent"],
                    r["limit"],
                    progress_bar(Decimal(r["percent_used"]), []),
                )
                for r in rows
            ),
        )
        # unfold's admin script draws <canvas class="chart"> with Chart.js from data-value.
        return format_html(
            "<p>Spent this month: <strong>{}</strong> in {} call(s)</p><ul>{}</ul>"
            '<div style="height:220px;max-width:720px"><canvas class="chart profile-daily-chart" '
            'data-type="bar" data-value="{}"></canvas></div>',
            money(cast("Decimal", spend["cost"])),  # the cost is a Decimal, the events an int
            spend["events"],
            items or mark_safe("<li>No budget applies to this profile.</li>"),  # noqa: S308 - a constant
            chart,
        )


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=ApiKey.Scope.choices, widget=forms.CheckboxSelectMultiple
    )

    class Meta:
        model = ApiKey
        fields = [
            "organization",
            "profile",
            "name",
            "scopes",
            "expires_at",
            "rate_limit_per_minute",
        ]

    def clean_scopes(self) -> list[str]:
        try:
            return parse_scopes(self.cleaned_data["scopes"])
        except ValidationError as exc:
            raise forms.ValidationError(exc.message_dict["scopes"]) from exc

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean() returns cleaned_data
        org, profile = data.get("organization"), data.get("profile")
        if org is not None and profile is not None and profile.organization_id != org.pk:
            self.add_error("profile", "The profile belongs to another organization.")
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(LocksOrganizationsOnDeleteMixin, TenantScopedAdminMixin, ModelAdmin):
    form = ApiKeyForm
    budgets_by = "api_key"
    list_display = [
        "name",
        "masked",
        "organization",
        "profile",
        "scope_list",
        "status",
        "last_used_at",
        "expires_at",
    ]
    list_select_related = ["organization", "profile"]
    list_filter = ["revoked_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["masked", "last_used_at", "revoked_at", "created_at"]
    raw_id_fields: list[str] = []
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A key's tenant and binding never change after issue; revoke and reissue.
        if obj is not None:
            return [*self.readonly_fields, "organization", "profile"]
        return self.readonly_fields

    @admin.display(description="Key")
    def masked(self, obj: ApiKey) -> str:
        return f"sk_{obj.prefix}_…" if obj.prefix else "—"

    @admin.display(description="Scopes")
    def scope_list(self, obj: ApiKey) -> str:
        return ", ".join(obj.scopes)

    @admin.display(description="Status")
    def status(self, obj: ApiKey) -> str:
        from django.utils import timezone

        if obj.revoked_at:
            return "revoked"
        if obj.expires_at and obj.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        if not change:
            secret = api_key_prepare(key=obj)
            super().save_model(request, obj, form, change)
            messages.warning(
                request,
                f"Copy this key now; it will not be shown again: {secret}",
            )
            return
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        managed = orgs_managed_by(request.user)
        count = 0
        for key in queryset.filter(organization__in=managed, revoked_at__isnull=True):
            api_key_revoke(key=key)
            count += 1
        self.message_user(request, f"Revoked {count} key(s).", messages.SUCCESS)

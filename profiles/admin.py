from __future__ import annotations

import json
from decimal import Decimal
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.contrib.admin.utils import quote, unquote
from django.contrib.auth.admin import GroupAdmin as BaseGroupAdmin
from django.contrib.auth.admin import UserAdmin as BaseUserAdmin
from django.contrib.auth.models import Group, User
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from unfold.admin import ModelAdmin, TabularInline
from unfold.forms import (
    AdminPasswordChangeForm,
    PaginationInlineFormSet,
    UserChangeForm,
    UserCreationForm,
)

from profiles.admin_scoping import TenantInlineMixin, TenantScopedAdminMixin
from profiles.models import ApiKey, Membership, Organization, Profile
from profiles.selectors import user_by_email
from profiles.services import (
    api_key_prepare,
    api_key_revoke,
    membership_invite,
    membership_set_check,
    memberships_delete_check,
    organization_owner_check,
    organization_save,
    organizations_lock,
    parse_scopes,
)
from profiles.tenancy import orgs_managed_by

# Users and groups span tenants: superusers only, styled like the rest.
admin.site.unregister(User)
admin.site.unregister(Group)


@admin.register(User)
class UserAdmin(BaseUserAdmin, ModelAdmin):
    form = UserChangeForm
    add_form = UserCreationForm
    change_password_form = AdminPasswordChangeForm


@admin.register(Group)
class GroupAdmin(BaseGroupAdmin, ModelAdmin):
    pass


class MembershipInlineForm(forms.ModelForm):
    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean() returns cleaned_data
        # Django leaves an inline's foreign key out of each form's constraint
        # checks and compares the forms only with each other: a member posted
        # as new whose row the page did not list (added meanwhile, or a listed
        # row posted back as new by a tampered INITIAL_FORMS) reached the
        # database's unique constraint.
        user = data.get("user")
        members = Membership.objects.filter(user=user, organization=self.instance.organization_id)
        if user is not None and members.exclude(pk=self.instance.pk).exists():
            self.add_error("user", "This user is already a member of the organization.")
        return data


class MembershipInlineFormSet(PaginationInlineFormSet):
    def clean(self) -> None:
        super().clean()
        # The rows together: each alone may leave another owner that a
        # second row of the same post deletes or demotes.
        roles: dict[int, str | None] = {}
        new_owners = 0
        for form in self.forms:
            role = getattr(form, "cleaned_data", {}).get("role")
            if self.can_delete and self._should_delete_form(form):
                if form.instance.pk is not None:
                    roles[form.instance.pk] = None
            elif role is None:
                continue  # the form's own error stops the save
            elif form.instance.pk is not None:
                roles[form.instance.pk] = role
            elif form.has_changed() and role == Membership.Role.OWNER:
                new_owners += 1
        organization_owner_check(org_id=self.instance.pk, roles=roles, new_owners=new_owners)


class MembershipInline(TenantInlineMixin, TabularInline):
    model = Membership
    form = MembershipInlineForm
    formset = MembershipInlineFormSet
    extra = 0
    fields = ["user", "role"]
    raw_id_fields = ["user"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # Tenant admins change roles here and invite on the Membership page.
        return [] if request.user.is_superuser else ["user"]

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


class LocksOrganizationsOnDeleteMixin:
    """Deletes rows whose deletion reaches budgets and their periods (a key's,
    an organization's) after locking their organizations, the first lock of
    every change to an organization's setup (``organizations_lock``): the
    periods first and the organization after (the setup-version triggers)
    would deadlock with a time zone change."""

    def _organization_of(self, obj: Any) -> object:
        return obj.organization_id

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        with transaction.atomic():
            organizations_lock([self._organization_of(obj)])
            super().delete_model(request, obj)  # type: ignore[misc]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        with transaction.atomic():
            organizations_lock({self._organization_of(obj) for obj in queryset})
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


class MembershipForm(forms.ModelForm):
    email = forms.EmailField(
        required=False,
        help_text="Invite by email: the user is created if new (staff, no password).",
    )

    class Meta:
        model = Membership
        fields = ["organization", "user", "role"]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        assert data is not None  # ModelForm.clean() returns cleaned_data
        if self.instance.pk is None and not data.get("user") and not data.get("email"):
            self.add_error("email", "Give the member's email (or pick a user).")
        role = data.get("role")
        if role is None:
            return data
        if self.instance.pk is None:
            # An invitation of a member already there changes their role.
            org, email = data.get("organization"), data.get("email")
            if org is not None and email:
                try:
                    membership_set_check(org=org, user=user_by_email(email=email), role=role)
                except ValidationError as exc:
                    self.add_error("role", exc)
            return data
        org = data.get("organization")  # an operator may move the membership
        moved = org is not None and org.pk != self.instance.organization_id
        try:
            organization_owner_check(
                org_id=self.instance.organization_id,
                roles={self.instance.pk: None if moved else role},
            )
        except ValidationError as exc:
            self.add_error("organization" if moved else "role", exc)
        return data


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdminMixin, ModelAdmin):
    form = MembershipForm
    list_display = ["user", "organization", "role", "created_at"]
    list_filter = ["role"]
    list_select_related = ["user", "organization"]
    search_fields = ["user__email", "user__username"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if request.user.is_superuser:
            return ["organization", "user", "email", "role"]
        return ["organization", "email", "role"] if obj is None else ["organization", "role"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["organization"] if obj is not None and not request.user.is_superuser else []

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any):
        form = super().get_form(request, obj, change=change, **kwargs)
        if "user" in form.base_fields:
            form.base_fields["user"].required = False
            form.base_fields["user"].widget.can_add_related = False
        return form

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        # One transaction for the check and the deletion: the check's lock
        # keeps another removal of an owner from passing in between.
        with transaction.atomic():
            obj = self.get_object(request, unquote(object_id))
            if obj is not None and self.has_delete_permission(request, obj):
                try:
                    memberships_delete_check(memberships=[obj])
                except ValidationError as exc:
                    self.message_user(request, " ".join(exc.messages), messages.ERROR)
                    change = reverse(
                        "admin:profiles_membership_change",
                        args=[quote(obj.pk)],
                        current_app=self.admin_site.name,
                    )
                    return HttpResponseRedirect(change)
            return super().delete_view(request, object_id, extra_context)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        if "delete_selected" in actions:
            _, name, description = actions["delete_selected"]
            actions["delete_selected"] = (_delete_selected_keeping_owners, name, description)
        return actions

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        email = form.cleaned_data.get("email")
        if not change and email:
            membership = membership_invite(org=obj.organization, email=email, role=obj.role)
            obj.pk = membership.pk
            obj.user = membership.user
            return
        super().save_model(request, obj, form, change)


def _delete_selected_keeping_owners(
    model_admin: MembershipAdmin, request: HttpRequest, queryset: QuerySet[Membership]
) -> HttpResponse | None:
    """Django's bulk deletion (its confirmation page, then the deletion), but
    refused when it would leave an organization without an owner."""
    with transaction.atomic():  # the check's locks held until the deletion commits
        try:
            memberships_delete_check(memberships=queryset)
        except ValidationError as exc:
            model_admin.message_user(request, " ".join(exc.messages), messages.ERROR)
            return None
        return admin_actions.delete_selected(model_admin, request, queryset)


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

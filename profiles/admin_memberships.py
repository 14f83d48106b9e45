"""Memberships in the admin: the organization page's member rows and the
membership pages, where an organization that has an owner always keeps one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import actions as admin_actions
from django.contrib.admin.utils import quote, unquote
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from unfold.admin import ModelAdmin, TabularInline
from unfold.forms import PaginationInlineFormSet

from profiles.admin_scoping import TenantInlineMixin, TenantScopedAdminMixin, tenant_access
from profiles.models import Membership
from profiles.selectors import user_by_email
from profiles.services import (
    membership_invite,
    membership_set_check,
    memberships_delete_check,
    organization_owner_check,
)

OWNER = Membership.Role.OWNER
NOT_AN_OWNER = "Only an owner of the organization gives or takes ownership."


def may_grant_ownership(request: HttpRequest, org_id: object) -> bool:
    """Ownership is given and taken by the organization's owners (and
    operators): its admins manage everything else, but cannot make themselves
    or anyone an owner, nor demote or remove one."""
    return bool(request.user.is_superuser or org_id in tenant_access(request).owned)


def _granting(request: HttpRequest) -> Any:
    """``may_grant_ownership`` for this request, as the ``grants_ownership``
    the membership form and the member rows are given per request."""
    return staticmethod(lambda org_id: may_grant_ownership(request, org_id))


def _touches_ownership(before: str | None, after: str | None) -> bool:
    """Does changing a membership's role from ``before`` to ``after`` (None:
    not there) give or take ownership?"""
    return before != after and OWNER in (before, after)


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
    # Set per request by MembershipInline.get_formset: may the user give or
    # take ownership in this organization (by id)?
    grants_ownership: Any = staticmethod(lambda org_id: False)

    def clean(self) -> None:
        super().clean()
        # The rows together: each alone may leave another owner that a
        # second row of the same post deletes or demotes.
        roles: dict[int, str | None] = {}
        new_owners: list[object] = []
        grants = self.grants_ownership(self.instance.pk)
        for form in self.forms:
            existing = form.instance.pk is not None
            before = form.initial.get("role") if existing else None
            role = getattr(form, "cleaned_data", {}).get("role")
            deleted = self.can_delete and self._should_delete_form(form)
            after = None if deleted else (before if role is None else role)
            if not grants and _touches_ownership(before, after):
                raise ValidationError(NOT_AN_OWNER, code="not_an_owner")
            if deleted:
                if existing:
                    roles[form.instance.pk] = None
            elif role is None:
                continue  # the form's own error stops the save
            elif existing and "user" not in form.changed_data:
                roles[form.instance.pk] = role
            else:
                # A new member, or a row given another user (its user leaves);
                # the check counts the new owners whose accounts can log in.
                if existing:
                    roles[form.instance.pk] = None
                user = form.cleaned_data.get("user")
                if form.has_changed() and role == OWNER and user is not None:
                    new_owners.append(user.pk)
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

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)  # a class of its own per call
        formset.grants_ownership = _granting(request)
        return formset


class MembershipForm(forms.ModelForm):
    email = forms.EmailField(
        required=False,
        help_text="Invite by email: the user is created if new (staff, no password).",
    )

    # Set per request by MembershipAdmin.get_form: may the user give or take
    # ownership in this organization (by id)?
    grants_ownership: Any = staticmethod(lambda org_id: False)

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
        org = data.get("organization")
        org_id = org.pk if org is not None else self.instance.organization_id
        before = self.initial.get("role") if self.instance.pk is not None else None
        if _touches_ownership(before, role) and not self.grants_ownership(org_id):
            self.add_error("role", NOT_AN_OWNER)
            return data
        if self.instance.pk is None:
            # An invitation of a member already there changes their role.
            email = data.get("email")
            if org is not None and email:
                try:
                    membership_set_check(org=org, user=user_by_email(email=email), role=role)
                except ValidationError as exc:
                    self.add_error("role", exc)
            return data
        # An operator may move the membership, or give it to another user,
        # who owns it only if their account can log in (the check looks).
        moved = org is not None and org.pk != self.instance.organization_id
        user = data.get("user")
        handed = "user" in self.changed_data and user is not None
        arriving = [user.pk] if user is not None and handed and not moved and role == OWNER else []
        try:
            organization_owner_check(
                org_id=self.instance.organization_id,
                roles={self.instance.pk: None if moved or handed else role},
                new_owners=arriving,
            )
        except ValidationError as exc:
            self.add_error("organization" if moved else "user" if handed else "role", exc)
        return data


class KeepsOwnersOnDeleteAdmin(ModelAdmin):
    """The delete page and the bulk deletion (Django's: a confirmation page,
    then the deletion) of rows whose deletion may take an organization's
    last owner: ``owner_check`` raising ValidationError refuses them, before
    and on confirmation, with its messages. The check and the deletion share
    one transaction, so the organizations the check locks stay locked until
    the deletion commits: another removal of an owner cannot pass in between."""

    def owner_check(self, request: HttpRequest, objs: Iterable[Any]) -> None:
        """Raise ValidationError when ``objs`` may not be deleted together."""
        raise NotImplementedError

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        with transaction.atomic():
            obj = self.get_object(request, unquote(object_id))
            if obj is not None and self.has_delete_permission(request, obj):
                try:
                    self.owner_check(request, [obj])
                except ValidationError as exc:
                    self.message_user(request, " ".join(exc.messages), messages.ERROR)
                    opts = self.opts
                    change = reverse(
                        f"admin:{opts.app_label}_{opts.model_name}_change",
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


def _delete_selected_keeping_owners(
    model_admin: KeepsOwnersOnDeleteAdmin, request: HttpRequest, queryset: QuerySet[Any]
) -> HttpResponse | None:
    """Django's bulk deletion, refused when ``owner_check`` refuses it."""
    with transaction.atomic():  # the check's locks held until the deletion commits
        try:
            model_admin.owner_check(request, queryset)
        except ValidationError as exc:
            model_admin.message_user(request, " ".join(exc.messages), messages.ERROR)
            return None
        return admin_actions.delete_selected(model_admin, request, queryset)


@admin.register(Membership)
class MembershipAdmin(TenantScopedAdminMixin, KeepsOwnersOnDeleteAdmin):
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
        form = super().get_form(request, obj, change=change, **kwargs)  # a class per call
        form.grants_ownership = _granting(request)
        if "user" in form.base_fields:
            form.base_fields["user"].required = False
            form.base_fields["user"].widget.can_add_related = False
        return form

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # An owner's membership is its owners' (and operators') to change.
        if (
            obj is not None
            and obj.role == OWNER
            and not may_grant_ownership(request, obj.organization_id)
        ):
            return False
        return super().has_change_permission(request, obj)

    def owner_check(self, request: HttpRequest, objs: Iterable[Membership]) -> None:
        # Removing an owner is for those who may take ownership, first.
        objs = list(objs)
        if any(
            m.role == OWNER and not may_grant_ownership(request, m.organization_id) for m in objs
        ):
            raise ValidationError(NOT_AN_OWNER, code="not_an_owner")
        memberships_delete_check(memberships=objs)

    def save_model(self, request: HttpRequest, obj: Membership, form: Any, change: bool) -> None:
        email = form.cleaned_data.get("email")
        if not change and email:
            membership = membership_invite(org=obj.organization, email=email, role=obj.role)
            obj.pk = membership.pk
            obj.user = membership.user
            return
        super().save_model(request, obj, form, change)

"""Tenant scoping for the admin, in one mixin every tenant ModelAdmin uses.

Superusers see everything. A staff user sees the organizations they belong to,
edits those where they are owner or admin, and gets read-only pages where they
are member or viewer. Another tenant's rows are absent from changelists and
foreign-key choices, and their object URLs answer 404.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from django.contrib import admin
from django.db import models
from django.http import Http404, HttpRequest

from profiles.models import Membership, Organization
from profiles.tenancy import for_orgs, orgs_managed_by


def _org_of(obj: models.Model, path: str) -> Organization | None:
    if path == "":
        return obj  # type: ignore[return-value]
    target: Any = obj
    for part in path.split("__"):
        target = getattr(target, part, None)
        if target is None:
            return None
    return target


@dataclass(frozen=True)
class TenantAccess:
    """The organizations a (non-superuser) user belongs to, those they manage,
    and those they own."""

    user_id: object
    visible: frozenset[object]
    managed: frozenset[object]
    owned: frozenset[object]


def tenant_access(request: HttpRequest) -> TenantAccess:
    """``request.user``'s memberships, read once per request: one admin page
    asks every registered model's permissions for its sidebar, each of which
    was a query of its own (27 a page)."""
    user: Any = request.user
    access: TenantAccess | None = getattr(request, "_tenant_access", None)
    if access is not None and access.user_id == user.pk:
        return access
    rows: list[tuple[object, str]] = []
    if user.is_authenticated and user.is_active:
        rows = list(Membership.objects.filter(user=user).values_list("organization_id", "role"))
    access = TenantAccess(
        user_id=user.pk,
        visible=frozenset(org for org, _ in rows),
        managed=frozenset(org for org, role in rows if role in Membership.MANAGING_ROLES),
        owned=frozenset(org for org, role in rows if role == Membership.Role.OWNER),
    )
    request._tenant_access = access  # type: ignore[attr-defined]
    return access


def visible_to(
    request: HttpRequest, queryset: models.QuerySet, path: str = "organization"
) -> models.QuerySet:
    """``queryset`` cut to the rows of ``request.user``'s organizations
    (reached through the field ``path``; "" for organizations themselves),
    or whole for a superuser. The organizations' ids go in as values, not a
    subquery of the memberships: with one organization the planner walks its
    (organization, time) index in the list's order and stops at the page
    (0.5 ms for a 500,000-event ledger), where the subquery read and sorted
    every row of it (340 ms)."""
    if request.user.is_superuser:
        return queryset
    lookup = "pk__in" if path == "" else f"{path}__in"
    return queryset.filter(**{lookup: sorted(tenant_access(request).visible, key=str)})


def is_tenant_staff(request: HttpRequest) -> bool:
    """May open the admin at all: an active staff superuser, or a staff member
    of at least one organization."""
    user: Any = request.user
    return bool(
        user.is_active and user.is_staff and (user.is_superuser or tenant_access(request).visible)
    )


def _related_model(db_field: models.Field[Any, Any]) -> type[models.Model]:
    """The target model class of a relation. ``related_model`` is only ``"self"``
    before the app registry has resolved it; form fields are built long after."""
    return cast("type[models.Model]", db_field.related_model)


class TenantScopedAdminMixin:
    """``org_path`` is the lookup from the model to its Organization ("" for the
    Organization model itself). ``global_rows_readable``: rows with no
    organization (the global price catalog) are visible, read-only, to everyone."""

    org_path: str = "organization"
    global_rows_readable: bool = False

    # -- visibility ---------------------------------------------------------------
    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        qs = super().get_queryset(request)  # type: ignore[misc]
        if request.user.is_superuser:
            return qs
        scoped = visible_to(request, qs, self.org_path)
        if self.global_rows_readable:
            scoped = scoped | qs.filter(**{f"{self.org_path}__isnull": True})
        return scoped

    def _obj_org_in(self, obj: models.Model | None, orgs: frozenset[object]) -> bool:
        if obj is None:
            return bool(orgs)
        org = _org_of(obj, self.org_path)
        if org is None:
            return False  # global rows: superusers only (they return early)
        return org.pk in orgs

    # -- permissions by role -----------------------------------------------------------
    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_tenant_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        if request.user.is_superuser:
            return True
        visible = tenant_access(request).visible
        if obj is not None and self.global_rows_readable and _org_of(obj, self.org_path) is None:
            return bool(visible)
        return self.has_module_permission(request) and self._obj_org_in(obj, visible)

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        if request.user.is_superuser:
            return True
        return self._obj_org_in(obj, tenant_access(request).managed)

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        if request.user.is_superuser:
            return True
        return bool(tenant_access(request).managed)

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self.has_change_permission(request, obj)

    # -- foreign keys: only the user's manageable organizations' rows --------------------
    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any
    ):
        if not request.user.is_superuser:
            kwargs["queryset"] = self.scope_related(_related_model(db_field), request)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def formfield_for_manytomany(
        self, db_field: models.ManyToManyField, request: HttpRequest, **kwargs: Any
    ):
        if not request.user.is_superuser:
            kwargs["queryset"] = self.scope_related(_related_model(db_field), request)
        return super().formfield_for_manytomany(db_field, request, **kwargs)  # type: ignore[misc]

    @staticmethod
    def scope_related(model: type[models.Model], request: HttpRequest) -> models.QuerySet:
        managed = orgs_managed_by(request.user)
        if model is Organization:
            return managed
        if getattr(model, "catalog_global", False):
            return model._default_manager.all()
        field_names = {f.name for f in model._meta.get_fields()}
        if "organization" in field_names:
            return for_orgs(model._default_manager.all(), managed)
        # A related model with no tenant (users, catalog rows) is chosen elsewhere.
        return model._default_manager.none()

    # -- another tenant's object URL is a 404, not a redirect that confirms it exists --
    def _get_obj_does_not_exist_redirect(self, request: HttpRequest, opts: Any, object_id: str):
        raise Http404("No such object.")


class GlobalCatalogAdminMixin:
    """Rows shared by every tenant (providers, models): any member may read them,
    only superusers change them."""

    global_catalog = True

    def has_module_permission(self, request: HttpRequest) -> bool:
        return is_tenant_staff(request)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self.has_module_permission(request)

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return request.user.is_superuser

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return request.user.is_superuser


class ReadOnlyAdminMixin:
    """For append-only records (the ledger, rollups, deliveries): viewable, never
    added, changed or deleted through the admin."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return False


class FormCountCapMixin:
    """For every inline: a post holds no more forms than the rows there are
    and ``NEW_ROWS`` more. Django's own cap is 2,000, and building that many
    forms from a forged count took 10.5 s of a worker per post (3.6 s on a
    model's read-only price rows)."""

    NEW_ROWS = 100

    def get_formset(self, request: HttpRequest, obj: models.Model | None = None, **kwargs: Any):
        formset = super().get_formset(request, obj, **kwargs)  # type: ignore[misc]
        rows = 0
        if obj is not None and obj.pk is not None:
            # The rows this inline shows this user: no more, or the cap would
            # count rows it keeps from them (another tenant's price overrides).
            shown = self.get_queryset(request)  # type: ignore[attr-defined]
            rows = shown.filter(**{formset.fk.name: obj}).count()
        formset.absolute_max = rows + self.NEW_ROWS
        formset.max_num = min(formset.max_num, formset.absolute_max)
        return formset


class TenantInlineMixin(FormCountCapMixin):
    """Inlines follow their parent's permissions and scope their own choices
    (and cap their forms, ``FormCountCapMixin``)."""

    def formfield_for_foreignkey(
        self, db_field: models.ForeignKey, request: HttpRequest, **kwargs: Any
    ):
        if not request.user.is_superuser:
            kwargs["queryset"] = TenantScopedAdminMixin.scope_related(
                _related_model(db_field), request
            )
        return super().formfield_for_foreignkey(db_field, request, **kwargs)  # type: ignore[misc]

    def _parent_perm(self, request: HttpRequest, obj: models.Model | None, perm: str) -> bool:
        if request.user.is_superuser:
            return True
        parent_admin = admin.site._registry.get(self.parent_model)  # type: ignore[attr-defined]
        if parent_admin is None:
            return False
        return getattr(parent_admin, perm)(request, obj)

    def has_view_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_perm(request, obj, "has_view_permission")

    def has_change_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_perm(request, obj, "has_change_permission")

    def has_add_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_perm(request, obj, "has_change_permission")

    def has_delete_permission(self, request: HttpRequest, obj: models.Model | None = None) -> bool:
        return self._parent_perm(request, obj, "has_change_permission")

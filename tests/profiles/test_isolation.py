"""Tenant isolation: the outsider gets nothing from any admin page or API endpoint."""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from profiles.admin_scoping import TenantScopedAdminMixin
from tests.isolation import ADMIN_OBJECT_MAKERS, API_URL_KWARGS, seed_usage

pytestmark = pytest.mark.django_db


def _admin_url(obj, action: str) -> str:
    meta = obj._meta
    return reverse(f"admin:{meta.app_label}_{meta.model_name}_{action}", args=[obj.pk])


def _changelist(model) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _tenant_admins():
    return [
        (m, a) for m, a in admin.site._registry.items() if isinstance(a, TenantScopedAdminMixin)
    ]


def test_every_tenant_admin_model_has_an_object_maker():
    missing = [m.__name__ for m, _ in _tenant_admins() if m not in ADMIN_OBJECT_MAKERS]
    assert not missing, f"add makers to tests/isolation.py for: {missing}"


def test_outsider_sees_no_other_tenant_rows_in_any_admin_changelist_or_object_url(
    tenant_a, tenant_b, alice, charlie
):
    outsider = _login(charlie)
    for model, _ in _tenant_admins():
        obj = ADMIN_OBJECT_MAKERS[model](tenant_a)
        own = ADMIN_OBJECT_MAKERS[model](tenant_b)
        resp = outsider.get(_changelist(model))
        assert resp.status_code == 200, model
        html = resp.content.decode()
        assert _admin_url(obj, "change") not in html, model
        assert _admin_url(own, "change") in html, f"{model}: own rows must show"
        for action in ("change", "history"):
            assert outsider.get(_admin_url(obj, action)).status_code == 404, (model, action)
        # Where the outsider may not delete even their own rows, the permission
        # check answers first (403 for any id, so nothing is revealed).
        own_delete = outsider.get(_admin_url(own, "delete")).status_code
        expected = 404 if own_delete == 200 else 403
        assert outsider.get(_admin_url(obj, "delete")).status_code == expected, model
        assert outsider.post(_admin_url(obj, "delete"), {"post": "yes"}).status_code == expected
        assert type(obj).objects.filter(pk=obj.pk).exists()


def test_outsider_search_and_filters_do_not_reach_other_tenant(tenant_a, tenant_b, charlie):
    outsider = _login(charlie)
    from profiles.models import Profile

    resp = outsider.get(_changelist(Profile), {"q": tenant_a.profile.external_id})
    assert resp.status_code == 200
    assert _admin_url(tenant_a.profile, "change") not in resp.content.decode()
    assert resp.context["cl"].result_count == 0


def test_foreign_key_choices_offer_only_own_organization(tenant_a, tenant_b, charlie):
    outsider = _login(charlie)

    html = outsider.get(reverse("admin:profiles_apikey_add")).content.decode()
    assert tenant_b.profile.external_id in html
    assert tenant_a.profile.external_id not in html
    assert str(tenant_a.org.pk) not in html


def test_outsider_cannot_create_key_for_other_tenant(tenant_a, tenant_b, charlie):
    from profiles.models import ApiKey

    outsider = _login(charlie)
    before = ApiKey.objects.filter(organization=tenant_a.org).count()
    resp = outsider.post(
        reverse("admin:profiles_apikey_add"),
        {"organization": str(tenant_a.org.pk), "name": "sneaky", "scopes": ["read"]},
    )
    assert resp.status_code == 200  # form redisplayed with an error
    assert "Select a valid choice" in resp.content.decode()
    assert ApiKey.objects.filter(organization=tenant_a.org).count() == before


def test_member_gets_read_only_pages_owner_can_edit(tenant_a, alice, bob):
    url = _admin_url(tenant_a.profile, "change")
    member_html = _login(bob).get(url)
    assert member_html.status_code == 200
    assert 'name="_save"' not in member_html.content.decode()
    resp = _login(bob).post(url, {"external_id": "renamed", "display_name": "x"})
    assert resp.status_code == 403
    tenant_a.profile.refresh_from_db()
    assert tenant_a.profile.external_id == "alice-app-user"
    owner_html = _login(alice).get(url).content.decode()
    assert 'name="_save"' in owner_html


def test_non_tenant_admin_models_are_closed_to_tenant_staff(tenant_a, alice):
    client = _login(alice)
    for model, model_admin in admin.site._registry.items():
        if isinstance(model_admin, TenantScopedAdminMixin):
            continue
        if getattr(model_admin, "global_catalog", False):
            continue
        assert client.get(_changelist(model)).status_code == 403, model


def test_superuser_sees_every_tenant(tenant_a, tenant_b):
    from tests.factories import UserFactory

    root = UserFactory(username="root@example.com", is_superuser=True)
    html = _login(root).get(_changelist(type(tenant_a.profile))).content.decode()
    assert tenant_a.profile.external_id in html and tenant_b.profile.external_id in html


def test_not_even_a_superuser_moves_a_profile_or_a_budget_to_another_tenant(tenant_a, tenant_b):
    from decimal import Decimal

    from quotas.services import budget_create
    from tests.admin_forms import read_form
    from tests.factories import UserFactory

    seed_usage(tenant_a)  # the profile's events stay in tenant A
    budget = budget_create(org=tenant_a.org, name="cap", limit=Decimal("5"))
    root = _login(UserFactory(username="root@example.com", is_superuser=True))
    for obj in (tenant_a.profile, budget):
        url = _admin_url(obj, "change")
        form = read_form(root.get(url).content.decode(), type(obj))
        assert "organization" not in form.names
        root.post(url, {**form.data, "organization": str(tenant_b.org.pk)})
        obj.refresh_from_db()
        assert obj.organization_id == tenant_a.org.pk


# -- API ---------------------------------------------------------------------------


def _api_patterns(resolver=None, prefix: str = ""):
    resolver = resolver or get_resolver()
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from _api_patterns(entry, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            route = prefix + str(entry.pattern)
            if route.startswith("api/v1/"):
                yield route, entry


def _methods(pattern: URLPattern) -> list[str]:
    view_class = getattr(pattern.callback, "view_class", None)
    assert view_class is not None, f"{pattern.name}: API views are class-based"
    return [m for m in ("get", "post", "patch", "put", "delete") if hasattr(view_class, m)]


def _markers(t) -> list[str]:
    return [t.org.slug, str(t.org.pk), t.profile.external_id, t.key.prefix, str(t.profile.pk)]


def test_isolation_markers_do_show_for_their_own_tenant(tenant_b):
    # The sweep below is only meaningful if a tenant's own reads show its markers.
    seed_usage(tenant_b)
    body = tenant_b.client().get("/api/v1/usage").content.decode()
    assert tenant_b.org.slug in body and tenant_b.profile.external_id in body


def test_every_api_url_with_arguments_has_an_isolation_entry():
    missing = [
        p.name
        for route, p in _api_patterns()
        if p.pattern.converters and p.name not in API_URL_KWARGS
    ]
    assert not missing, f"add other-tenant kwargs to tests/isolation.py for: {missing}"


def test_every_api_endpoint_gives_other_tenants_objects_as_404_and_lists_nothing(
    tenant_a, tenant_b
):
    seed_usage(tenant_a)
    seed_usage(tenant_b)
    client = tenant_a.client()
    checked = 0
    for route, pattern in _api_patterns():
        if pattern.pattern.converters:
            url = reverse(pattern.name, kwargs=API_URL_KWARGS[pattern.name](tenant_b))
            for method in _methods(pattern):
                resp = getattr(client, method)(url, {}, format="json")
                assert resp.status_code == 404, (route, method, resp.status_code)
                assert resp.json()["error"] == "not_found"
                checked += 1
        elif "get" in _methods(pattern):
            url = reverse(pattern.name)
            resp = client.get(url)
            assert resp.status_code < 500, (route, resp.status_code)
            body = (b"".join(resp.streaming_content) if resp.streaming else resp.content).decode()
            for marker in _markers(tenant_b):
                assert marker not in body, (route, marker)
            checked += 1
    assert checked >= 2

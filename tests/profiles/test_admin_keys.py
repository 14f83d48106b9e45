from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from profiles.models import ApiKey
from profiles.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_creating_a_key_in_the_admin_shows_its_secret_once_and_it_works(tenant_a, alice):
    client = _login(alice)
    resp = client.post(
        reverse("admin:profiles_apikey_add"),
        {"organization": str(tenant_a.org.pk), "name": "from admin", "scopes": ["read", "check"]},
        follow=True,
    )
    assert resp.status_code == 200
    shown = [str(m) for m in resp.context["messages"]]
    secret_lines = [m for m in shown if "not be shown again" in m]
    assert len(secret_lines) == 1
    secret = secret_lines[0].rsplit(" ", 1)[1]
    key = api_key_authenticate(raw=secret)
    assert key.name == "from admin" and key.scopes == ["check", "read"]
    assert key.organization_id == tenant_a.org.pk
    # Shown once: the next page carries no secret, and the stored row has only its hash.
    again = client.get(reverse("admin:profiles_apikey_change", args=[key.pk])).content.decode()
    assert secret not in again
    assert secret.split("_", 2)[2] not in str(ApiKey.objects.filter(pk=key.pk).values().get())


def test_member_cannot_create_keys(tenant_a, bob):
    resp = _login(bob).post(
        reverse("admin:profiles_apikey_add"),
        {"organization": str(tenant_a.org.pk), "name": "nope", "scopes": ["read"]},
    )
    assert resp.status_code == 403
    assert not ApiKey.objects.filter(name="nope").exists()


def test_viewer_sees_keys_read_only(tenant_a):
    from profiles.models import Membership
    from tests.factories import MembershipFactory, UserFactory

    viewer = UserFactory(username="viewer@example.com")
    MembershipFactory(user=viewer, organization=tenant_a.org, role=Membership.Role.VIEWER)
    client = _login(viewer)
    listing = client.get(reverse("admin:profiles_apikey_changelist"))
    assert listing.status_code == 200
    assert tenant_a.key.name in listing.content.decode()
    page = client.get(reverse("admin:profiles_apikey_change", args=[tenant_a.key.pk]))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()


def test_owner_invites_a_member_by_email_and_a_missing_email_is_a_form_error(tenant_a, alice):
    from django.contrib.auth import get_user_model

    from profiles.models import Membership

    client = _login(alice)
    url = reverse("admin:profiles_membership_add")
    missing = client.post(url, {"organization": str(tenant_a.org.pk), "role": "member"})
    assert missing.status_code == 200
    assert "Give the member" in missing.content.decode()
    resp = client.post(
        url, {"organization": str(tenant_a.org.pk), "email": "new@acme.test", "role": "viewer"}
    )
    assert resp.status_code == 302
    user = get_user_model().objects.get(email="new@acme.test")
    assert user.is_staff and not user.has_usable_password()
    assert Membership.objects.get(user=user, organization=tenant_a.org).role == "viewer"


def test_a_listed_member_posted_back_as_a_new_one_is_a_form_error(tenant_a, alice):
    from profiles.models import Membership, Organization
    from tests.admin_forms import read_form
    from tests.factories import UserFactory

    client = _login(UserFactory(username="root@example.com", is_superuser=True))
    url = reverse("admin:profiles_organization_change", args=[tenant_a.org.pk])
    form = read_form(client.get(url).content.decode(), Organization)
    assert form.data["memberships-0-user"] == [str(alice.pk)]
    # A count of listed rows below the page's: alice's row is posted as a new one.
    resp = client.post(url, {**form.data, "memberships-INITIAL_FORMS": "0"})
    assert resp.status_code == 200
    assert "already a member of the organization" in resp.content.decode()
    assert Membership.objects.filter(user=alice, organization=tenant_a.org).count() == 1

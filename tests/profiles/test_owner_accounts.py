"""An owner whose account is deactivated, who cannot log in, does not count
as one of an organization's owners."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from profiles.models import Membership, Organization
from profiles.services import membership_set
from tests.admin_forms import read_form
from tests.factories import MembershipFactory, UserFactory
from tests.profiles.test_last_owner import _login, _post_members, _roles

pytestmark = pytest.mark.django_db

OWNER, ADMIN, MEMBER = Membership.Role.OWNER, Membership.Role.ADMIN, Membership.Role.MEMBER


def _left_without(name: str) -> str:
    return f"{name} would be left without an owner: make another member its owner first."


LEFT_WITHOUT = _left_without("Acme")


@pytest.fixture
def root() -> User:
    return UserFactory(username="root@example.com", is_superuser=True)


@pytest.fixture
def operator(root) -> Client:
    return _login(root)


def _member(org: Organization, username: str, role: str, *, active: bool = True) -> User:
    user = UserFactory(username=username, is_active=active)
    MembershipFactory(user=user, organization=org, role=role)
    return user


# -- an owner who cannot log in is none ------------------------------------------------------


def test_a_deactivated_owner_does_not_keep_the_organization_owned(tenant_a, alice):
    _member(tenant_a.org, "dave@example.com", OWNER, active=False)
    with pytest.raises(ValidationError) as caught:
        membership_set(org=tenant_a.org, user=alice, role=ADMIN)
    assert caught.value.messages == [LEFT_WITHOUT]
    assert _roles(tenant_a.org)["alice@example.com"] == OWNER


def test_handing_ownership_to_a_deactivated_member_is_refused_on_the_organization_page(
    tenant_a, alice
):
    erin = _member(tenant_a.org, "erin@example.com", MEMBER, active=False)
    alices, erins = (Membership.objects.get(user=u) for u in (alice, erin))
    resp = _post_members(_login(alice), tenant_a.org, {alices: {"role": ADMIN}, erins: {"role": OWNER}})  # fmt: skip
    assert resp.status_code == 200
    assert LEFT_WITHOUT in resp.content.decode()
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "erin@example.com": MEMBER}


def test_a_deactivated_account_added_or_put_on_the_owners_row_is_no_owner(
    tenant_a, alice, operator
):
    erin = UserFactory(username="erin@example.com", is_active=False)
    alices = Membership.objects.get(user=alice)
    url = reverse("admin:profiles_organization_change", args=[tenant_a.org.pk])
    page = read_form(operator.get(url).content.decode(), Organization).data
    (row,) = [name.removesuffix("-id") for name in page if name.endswith("-id")]
    new = f"memberships-{page['memberships-TOTAL_FORMS'][0]}"
    added = {
        "memberships-TOTAL_FORMS": [str(int(page["memberships-TOTAL_FORMS"][0]) + 1)],
        f"{new}-user": [str(erin.pk)],
        f"{new}-role": [OWNER],
        f"{row}-role": [ADMIN],
    }
    resp = operator.post(url, {**page, **added})
    assert resp.status_code == 200
    assert LEFT_WITHOUT in resp.content.decode()

    resp = operator.post(url, {**page, f"{row}-user": [str(erin.pk)]})
    assert resp.status_code == 200
    assert LEFT_WITHOUT in resp.content.decode()
    assert Membership.objects.get(pk=alices.pk).user_id == alice.pk
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


def test_the_owners_membership_given_to_a_deactivated_account_is_a_field_error(
    tenant_a, alice, operator
):
    erin = UserFactory(username="erin@example.com", is_active=False)
    alices = Membership.objects.get(user=alice)
    url = reverse("admin:profiles_membership_change", args=[alices.pk])
    data = {"organization": str(tenant_a.org.pk), "user": str(erin.pk), "role": OWNER}
    resp = operator.post(url, data)
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors == {"user": [LEFT_WITHOUT]}
    assert Membership.objects.get(pk=alices.pk).user_id == alice.pk

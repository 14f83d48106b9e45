"""Ownership is given and taken by an organization's owners (and operators):
its admins manage members, keys and budgets, but cannot make anyone an owner,
themselves included, nor demote or remove an owner."""

from __future__ import annotations

import pytest
from django.urls import reverse

from profiles.models import Membership
from tests.admin_forms import post_form
from tests.factories import MembershipFactory, UserFactory
from tests.profiles.test_last_owner import _login, _post_members, _roles

pytestmark = pytest.mark.django_db

OWNER, ADMIN, MEMBER = Membership.Role.OWNER, Membership.Role.ADMIN, Membership.Role.MEMBER
NOT_AN_OWNER = "Only an owner of the organization gives or takes ownership."


@pytest.fixture
def adam(tenant_a):
    user = UserFactory(username="adam@example.com")
    MembershipFactory(user=user, organization=tenant_a.org, role=ADMIN)
    return user


def _membership(user, tenant) -> Membership:
    return Membership.objects.get(user=user, organization=tenant.org)


def test_an_admin_cannot_make_themselves_or_a_member_owner_on_the_organization_page(
    tenant_a, alice, bob, adam
):
    before = _roles(tenant_a.org)
    for who in (adam, bob):
        resp = _post_members(
            _login(adam), tenant_a.org, {_membership(who, tenant_a): {"role": OWNER}}
        )
        assert resp.status_code == 200  # the page again, with the error
        assert NOT_AN_OWNER in resp.content.decode()
    assert _roles(tenant_a.org) == before


def test_an_admin_cannot_demote_or_remove_an_owner_on_the_organization_page(tenant_a, alice, adam):
    before = _roles(tenant_a.org)
    alices = _membership(alice, tenant_a)
    for change in ({"role": MEMBER}, {"DELETE": "on"}):
        resp = _post_members(_login(adam), tenant_a.org, {alices: change})
        assert NOT_AN_OWNER in resp.content.decode()
    assert _roles(tenant_a.org) == before


def test_an_admin_still_changes_other_roles(tenant_a, alice, bob, adam):
    resp = _post_members(_login(adam), tenant_a.org, {_membership(bob, tenant_a): {"role": ADMIN}})
    assert resp.status_code == 302, resp.content.decode()[-2000:]
    assert _roles(tenant_a.org)["bob@example.com"] == ADMIN


def test_an_owner_makes_a_member_owner(tenant_a, alice, bob):
    resp = _post_members(_login(alice), tenant_a.org, {_membership(bob, tenant_a): {"role": OWNER}})
    assert resp.status_code == 302
    assert _roles(tenant_a.org)["bob@example.com"] == OWNER


def test_on_the_membership_pages_an_admin_neither_invites_nor_promotes_an_owner(
    tenant_a, alice, bob, adam
):
    client = _login(adam)
    before = _roles(tenant_a.org)
    bobs = reverse("admin:profiles_membership_change", args=[_membership(bob, tenant_a).pk])
    resp = post_form(client, bobs, Membership, role=OWNER)
    assert resp.status_code == 200 and NOT_AN_OWNER in resp.content.decode()
    add = reverse("admin:profiles_membership_add")
    resp = post_form(client, add, Membership, email="new@example.com", role=OWNER,
                     organization=str(tenant_a.org.pk))  # fmt: skip
    assert resp.status_code == 200 and NOT_AN_OWNER in resp.content.decode()
    assert _roles(tenant_a.org) == before


def test_an_owners_membership_is_read_only_to_an_admin_and_not_deleted_by_them(
    tenant_a, alice, bob, adam
):
    # Two owners: the last-owner rule alone would let either go.
    Membership.objects.filter(user=bob, organization=tenant_a.org).update(role=OWNER)
    client = _login(adam)
    alices = _membership(alice, tenant_a)
    change = reverse("admin:profiles_membership_change", args=[alices.pk])
    page = client.get(change)
    assert page.status_code == 200
    assert 'name="role"' not in page.content.decode()  # shown, not editable
    assert client.post(change, {"role": MEMBER}).status_code == 403
    delete = reverse("admin:profiles_membership_delete", args=[alices.pk])
    assert client.post(delete, {"post": "yes"}).status_code == 403
    changelist = reverse("admin:profiles_membership_changelist")
    resp = client.post(changelist, {"action": "delete_selected",
                                    "_selected_action": [alices.pk], "post": "yes"})  # fmt: skip
    assert resp.status_code == 302
    assert _roles(tenant_a.org)["alice@example.com"] == OWNER
    # An owner may.
    _login(alice).post(changelist, {"action": "delete_selected",
                                    "_selected_action": [_membership(bob, tenant_a).pk],
                                    "post": "yes"})  # fmt: skip
    assert "bob@example.com" not in _roles(tenant_a.org)

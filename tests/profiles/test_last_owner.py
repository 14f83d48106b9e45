"""An organization that has an owner keeps one: its last owner is neither
removed nor given another role, on the organization page's members, on the
membership pages, or by the services that change memberships."""

from __future__ import annotations

import threading

import pytest
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse

from profiles.models import Membership, Organization
from profiles.services import membership_set
from tests.admin_forms import read_form
from tests.factories import MembershipFactory, UserFactory
from tests.quotas.helpers import run_threads

pytestmark = pytest.mark.django_db

LEFT_WITHOUT = "Acme would be left without an owner: make another member its owner first."
OWNER, ADMIN = Membership.Role.OWNER, Membership.Role.ADMIN


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _roles(org: Organization) -> dict[str, str]:
    return dict(Membership.objects.filter(organization=org).values_list("user__username", "role"))


def _post_members(client: Client, org: Organization, changes: dict[Membership, dict[str, str]]):
    """The organization page posted back with changes to its member rows."""
    url = reverse("admin:profiles_organization_change", args=[org.pk])
    form = read_form(client.get(url).content.decode(), Organization)
    data = dict(form.data)
    rows = {v[0]: name.removesuffix("-id") for name, v in data.items() if name.endswith("-id")}
    for membership, fields in changes.items():
        for field, value in fields.items():
            data[f"{rows[str(membership.pk)]}-{field}"] = [value]
    return client.post(url, data)


@pytest.fixture
def alices(alice, tenant_a) -> Membership:
    return Membership.objects.get(user=alice, organization=tenant_a.org)


# -- the organization page's members ---------------------------------------------------------


def test_the_only_owner_deleting_her_own_membership_is_refused(tenant_a, alice, alices, bob):
    resp = _post_members(_login(alice), tenant_a.org, {alices: {"DELETE": "on"}})
    assert resp.status_code == 200
    (formset,) = [f.formset for f in resp.context["inline_admin_formsets"]]
    assert formset.non_form_errors() == [LEFT_WITHOUT]
    assert LEFT_WITHOUT in resp.content.decode()
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "bob@example.com": "member"}


def test_the_only_owner_demoting_herself_is_refused(tenant_a, alice, alices):
    resp = _post_members(_login(alice), tenant_a.org, {alices: {"role": ADMIN}})
    assert resp.status_code == 200
    assert LEFT_WITHOUT in resp.content.decode()
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


def test_an_owner_leaves_when_another_owner_stays(tenant_a, alice, alices):
    MembershipFactory(
        user=UserFactory(username="dave@example.com"), organization=tenant_a.org, role=OWNER
    )
    resp = _post_members(_login(alice), tenant_a.org, {alices: {"DELETE": "on"}})
    assert resp.status_code == 302
    assert _roles(tenant_a.org) == {"dave@example.com": OWNER}


def test_both_owners_demoted_in_one_post_is_refused(tenant_a, alice, alices):
    daves = MembershipFactory(
        user=UserFactory(username="dave@example.com"), organization=tenant_a.org, role=OWNER
    )
    resp = _post_members(
        _login(alice), tenant_a.org, {alices: {"role": ADMIN}, daves: {"DELETE": "on"}}
    )
    assert resp.status_code == 200
    assert LEFT_WITHOUT in resp.content.decode()
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "dave@example.com": OWNER}


def test_the_owner_hands_over_to_a_member_in_one_post(tenant_a, alice, alices, bob):
    bobs = Membership.objects.get(user=bob)
    resp = _post_members(
        _login(alice), tenant_a.org, {alices: {"role": ADMIN}, bobs: {"role": OWNER}}
    )
    assert resp.status_code == 302
    assert _roles(tenant_a.org) == {"alice@example.com": ADMIN, "bob@example.com": OWNER}


def test_an_organization_without_an_owner_still_takes_role_changes(tenant_b):
    dana = MembershipFactory(organization=tenant_b.org, role=ADMIN)
    operator = UserFactory(username="root@example.com", is_superuser=True)
    resp = _post_members(_login(operator), tenant_b.org, {dana: {"role": "viewer"}})
    assert resp.status_code == 302
    assert Membership.objects.get(pk=dana.pk).role == "viewer"


# -- the membership pages -------------------------------------------------------------------


def test_the_last_owners_membership_page_refuses_another_role(tenant_a, alice, alices):
    url = reverse("admin:profiles_membership_change", args=[alices.pk])
    resp = _login(alice).post(url, {"role": "member"})
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["role"] == [LEFT_WITHOUT]
    assert Membership.objects.get(pk=alices.pk).role == OWNER


def test_an_operator_cannot_move_the_last_owner_to_another_organization(tenant_a, tenant_b, alices):
    operator = _login(UserFactory(username="root@example.com", is_superuser=True))
    url = reverse("admin:profiles_membership_change", args=[alices.pk])
    data = {"organization": str(tenant_b.org.pk), "user": str(alices.user_id), "role": OWNER}
    resp = operator.post(url, data)
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["organization"] == [LEFT_WITHOUT]
    assert Membership.objects.get(pk=alices.pk).organization_id == tenant_a.org.pk


def test_deleting_the_last_owners_membership_is_refused_before_and_on_confirmation(
    tenant_a, alice, alices
):
    url = reverse("admin:profiles_membership_delete", args=[alices.pk])
    change = reverse("admin:profiles_membership_change", args=[alices.pk])
    for resp in (_login(alice).get(url), _login(alice).post(url, {"post": "yes"})):
        assert resp.status_code == 302
        assert resp["Location"] == change
        assert [str(m) for m in get_messages(resp.wsgi_request)] == [LEFT_WITHOUT]
    assert Membership.objects.filter(pk=alices.pk).exists()


def test_deleting_a_member_still_works(tenant_a, alice, bob):
    bobs = Membership.objects.get(user=bob)
    url = reverse("admin:profiles_membership_delete", args=[bobs.pk])
    resp = _login(alice).post(url, {"post": "yes"})
    assert resp.status_code == 302
    assert not Membership.objects.filter(pk=bobs.pk).exists()


def test_the_bulk_delete_refuses_to_take_the_last_owner(tenant_a, alice, alices, bob):
    bobs = Membership.objects.get(user=bob)
    url = reverse("admin:profiles_membership_changelist")
    chosen = {"action": "delete_selected", "_selected_action": [alices.pk, bobs.pk]}
    for confirmed in ({}, {"post": "yes"}):
        resp = _login(alice).post(url, {**chosen, **confirmed})
        assert resp.status_code == 302
        assert [str(m) for m in get_messages(resp.wsgi_request)] == [LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "bob@example.com": "member"}

    resp = _login(alice).post(
        url, {"action": "delete_selected", "_selected_action": [bobs.pk], "post": "yes"}
    )
    assert resp.status_code == 302
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


def test_inviting_the_last_owner_again_with_another_role_is_a_form_error(tenant_a, alice):
    url = reverse("admin:profiles_membership_add")
    data = {"organization": str(tenant_a.org.pk), "email": "ALICE@example.com", "role": "viewer"}
    resp = _login(alice).post(url, data)
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["role"] == [LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


# -- the service ------------------------------------------------------------------------------


def test_membership_set_refuses_to_demote_the_last_owner(tenant_a, alice):
    with pytest.raises(ValidationError) as caught:
        membership_set(org=tenant_a.org, user=alice, role=ADMIN)
    assert caught.value.messages == [LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


def test_membership_set_demotes_an_owner_when_another_stays(tenant_a, alice):
    membership_set(org=tenant_a.org, user=UserFactory(username="dave@example.com"), role=OWNER)
    membership_set(org=tenant_a.org, user=alice, role=ADMIN)
    assert _roles(tenant_a.org) == {"alice@example.com": ADMIN, "dave@example.com": OWNER}


@pytest.mark.django_db(transaction=True)
def test_two_owners_demoting_each_other_at_once_leave_one_owner(tenant_a, alice):
    dave = UserFactory(username="dave@example.com")
    MembershipFactory(user=dave, organization=tenant_a.org, role=OWNER)
    first_demoted, commit_first = threading.Event(), threading.Event()

    def work(i: int) -> None:
        if i == 0:
            with transaction.atomic():
                membership_set(org=tenant_a.org, user=alice, role=ADMIN)
                first_demoted.set()
                assert commit_first.wait(10)
        else:
            assert first_demoted.wait(10)
            # The second demotion starts while the first is not committed
            # yet; the first commits a moment later.
            threading.Timer(0.5, commit_first.set).start()
            membership_set(org=tenant_a.org, user=dave, role=ADMIN)

    errors = run_threads(2, work)
    assert [e.messages for e in errors if isinstance(e, ValidationError)] == [[LEFT_WITHOUT]]
    assert len(errors) == 1
    assert _roles(tenant_a.org) == {"alice@example.com": ADMIN, "dave@example.com": OWNER}

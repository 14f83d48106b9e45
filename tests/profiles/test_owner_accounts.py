"""An organization that has an owner who can log in keeps one when user
accounts go: the last owner's account is neither deleted (which would take
her membership with it) nor deactivated, on the user pages or by the
service, and an owner whose account is deactivated does not count as one."""

from __future__ import annotations

import threading

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.test import Client
from django.urls import reverse

from profiles.models import Membership, Organization
from profiles.services import membership_set, organizations_lock, users_delete
from tests.admin_forms import read_form
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.profiles.test_last_owner import _login, _post_members, _roles
from tests.quotas.helpers import InBackground, run_threads, until_a_lock_wait

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


def _url(view: str, user: User | None = None) -> str:
    return reverse(f"admin:auth_user_{view}", args=[] if user is None else [user.pk])


def _messages(resp) -> list[str]:
    return [str(m) for m in get_messages(resp.wsgi_request)]


def _accounts() -> set[str]:
    return set(User.objects.exclude(username="root@example.com").values_list("username", flat=True))


def _post_user_form(client: Client, user: User, **changes: str | None):
    """The user's change page posted back as a browser would, with ``changes``
    (None: a box left unchecked)."""
    url = _url("change", user)
    data = dict(read_form(client.get(url).content.decode(), User).data)
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = [value]
    return client.post(url, data)


# -- deleting an account ---------------------------------------------------------------------


def test_deleting_the_last_owners_account_is_refused_before_and_on_confirmation(
    tenant_a, alice, bob, root
):
    url = _url("delete", alice)
    for resp in (_login(root).get(url), _login(root).post(url, {"post": "yes"})):
        assert resp.status_code == 302
        assert resp["Location"] == _url("change", alice)
        assert _messages(resp) == [LEFT_WITHOUT]
    assert _accounts() == {"alice@example.com", "bob@example.com"}
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "bob@example.com": MEMBER}


def test_the_refusal_names_every_organization_left_without_an_owner(
    tenant_a, tenant_b, alice, charlie, operator
):
    # Globex keeps charlie; Acme and Initech would have nobody.
    MembershipFactory(user=alice, organization=tenant_b.org, role=OWNER)
    initech = OrganizationFactory(slug="initech", name="Initech")
    MembershipFactory(user=alice, organization=initech, role=OWNER)
    resp = operator.post(_url("delete", alice), {"post": "yes"})
    assert resp.status_code == 302
    assert _messages(resp) == [f"{LEFT_WITHOUT} {_left_without('Initech')}"]
    assert User.objects.filter(pk=alice.pk).exists()


def test_an_owners_account_goes_only_when_another_owner_can_log_in(tenant_a, alice, operator):
    dave = _member(tenant_a.org, "dave@example.com", OWNER, active=False)
    resp = operator.post(_url("delete", alice), {"post": "yes"})
    assert resp["Location"] == _url("change", alice)
    assert _messages(resp) == [LEFT_WITHOUT]

    User.objects.filter(pk=dave.pk).update(is_active=True)
    resp = operator.post(_url("delete", alice), {"post": "yes"})
    assert resp.status_code == 302
    assert resp["Location"] == _url("changelist")
    assert _roles(tenant_a.org) == {"dave@example.com": OWNER}


def test_the_bulk_delete_refuses_the_last_owners_account(tenant_a, alice, bob, root):
    chosen = {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk]}
    for confirmed in ({}, {"post": "yes"}):
        resp = _login(root).post(_url("changelist"), {**chosen, **confirmed})
        assert resp.status_code == 302
        assert _messages(resp) == [LEFT_WITHOUT]
    assert _accounts() == {"alice@example.com", "bob@example.com"}

    chosen = {"action": "delete_selected", "_selected_action": [bob.pk], "post": "yes"}
    assert _login(root).post(_url("changelist"), chosen).status_code == 302
    assert _accounts() == {"alice@example.com"}


def test_the_bulk_delete_refuses_both_owners_accounts_at_once(tenant_a, alice, operator):
    # Each alone leaves the other: together they leave nobody.
    dave = _member(tenant_a.org, "dave@example.com", OWNER)
    chosen = {"action": "delete_selected", "_selected_action": [alice.pk, dave.pk], "post": "yes"}
    resp = operator.post(_url("changelist"), chosen)
    assert _messages(resp) == [LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER, "dave@example.com": OWNER}


def test_the_last_owners_account_goes_once_her_organization_is_deleted(tenant_a, alice, operator):
    resp = operator.post(_url("delete", alice), {"post": "yes"})
    assert _messages(resp) == [LEFT_WITHOUT]

    org_delete = reverse("admin:profiles_organization_delete", args=[tenant_a.org.pk])
    assert operator.post(org_delete, {"post": "yes"}).status_code == 302
    assert not Organization.objects.filter(pk=tenant_a.org.pk).exists()
    assert not Membership.objects.filter(user=alice).exists()

    resp = operator.post(_url("delete", alice), {"post": "yes"})
    assert resp["Location"] == _url("changelist")
    assert not User.objects.filter(pk=alice.pk).exists()


def test_users_delete_refuses_the_last_owner_and_deletes_one_of_two(tenant_a, alice):
    with pytest.raises(ValidationError) as caught:
        users_delete(users=[alice])
    assert caught.value.messages == [LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}

    _member(tenant_a.org, "dave@example.com", OWNER)
    users_delete(users=[alice])
    assert _roles(tenant_a.org) == {"dave@example.com": OWNER}


@pytest.mark.django_db(transaction=True)
def test_two_owners_accounts_deleted_at_once_leave_one(tenant_a, alice, root):
    dave = _member(tenant_a.org, "dave@example.com", OWNER)
    client = _login(root)
    first_deleted, commit_first = threading.Event(), threading.Event()
    refused: list[object] = []

    def work(i: int) -> None:
        if i == 0:
            with transaction.atomic():
                users_delete(users=[alice])
                first_deleted.set()
                assert commit_first.wait(10)
        else:
            assert first_deleted.wait(10)
            # The operator deletes dave while alice's deletion is not
            # committed yet; it commits a moment later.
            threading.Timer(0.5, commit_first.set).start()
            resp = client.post(_url("delete", dave), {"post": "yes"})
            refused.append(resp["Location"])
            refused.extend(_messages(resp))

    assert run_threads(2, work) == []
    assert refused == [_url("change", dave), LEFT_WITHOUT]
    assert _roles(tenant_a.org) == {"dave@example.com": OWNER}


@pytest.mark.django_db(transaction=True)
def test_an_account_made_an_owner_elsewhere_meanwhile_is_deleted_without_a_deadlock(monkeypatch):
    """The deletion read what the account owns; then the account was made
    the owner of an organization that comes first in the lock order, which
    another change holds while it waits for the one the deletion locked.
    Seeing it with the accounts locked, the deletion lets everything go and
    takes it again in order, instead of waiting crosswise."""
    import profiles.services.users as users_module

    first, second = sorted(
        [OrganizationFactory(slug="one"), OrganizationFactory(slug="two")], key=lambda o: str(o.pk)
    )
    leaving = _member(second, "leaving@example.com", OWNER)
    _member(second, "staying@example.com", OWNER)
    _member(first, "first-owner@example.com", OWNER)
    original = users_module.organizations_lock
    other: list[InBackground] = []

    def another_change() -> None:
        with transaction.atomic():
            organizations_lock([first.pk, second.pk])

    def lock_while_things_happen(org_ids) -> None:
        if other:
            original(org_ids)
            return
        made = run_threads(1, lambda _: membership_set(org=first, user=leaving, role=OWNER))
        assert made == []
        original(org_ids)  # what it owned when it looked: the second only
        other.append(InBackground(another_change))  # holds the first, waits for the second
        # Seen from another session: this one's transaction keeps its first view of the activity.
        assert run_threads(1, lambda _: until_a_lock_wait()) == []

    monkeypatch.setattr(users_module, "organizations_lock", lock_while_things_happen)
    users_delete(users=[leaving])
    other[0].join()

    assert not User.objects.filter(username="leaving@example.com").exists()
    assert _roles(first) == {"first-owner@example.com": OWNER}
    assert _roles(second) == {"staying@example.com": OWNER}


# -- deactivating an account -----------------------------------------------------------------


def test_deactivating_the_last_owners_account_is_a_field_error(tenant_a, alice, operator):
    dave = _member(tenant_a.org, "dave@example.com", OWNER, active=False)
    resp = _post_user_form(operator, alice, is_active=None)
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors == {"is_active": [LEFT_WITHOUT]}
    assert User.objects.get(pk=alice.pk).is_active

    User.objects.filter(pk=dave.pk).update(is_active=True)
    resp = _post_user_form(operator, alice, is_active=None)
    assert resp.status_code == 302
    assert not User.objects.get(pk=alice.pk).is_active


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


# -- an account made owner while it is deactivated ------------------------------------------


def _hand_ownership(org: Organization, alices: Membership, carol: User) -> None:
    """Alice (the only owner) makes carol owner and steps down, as the
    organization page's member rows do: checked, then written."""
    from profiles.services import organization_owner_check

    organization_owner_check(org_id=org.pk, roles={alices.pk: MEMBER}, new_owners=[carol.pk])
    Membership.objects.create(organization=org, user=carol, role=OWNER)
    Membership.objects.filter(pk=alices.pk).update(role=MEMBER)


def _deactivate(user: User) -> None:
    """What the user change form does on unchecking is_active: check, then save."""
    from profiles.services import users_owner_check

    users_owner_check(users=[user])
    User.objects.filter(pk=user.pk).update(is_active=False)


def _race(first, second) -> list[BaseException]:
    """``first`` runs in a transaction that commits half a second after
    ``second`` has started in its own; returns what ``second`` raised."""
    started, commit = threading.Event(), threading.Event()
    raised: list[BaseException] = []

    def work(i: int) -> None:
        if i == 0:
            with transaction.atomic():
                first()
                started.set()
                assert commit.wait(10)
        else:
            assert started.wait(10)
            threading.Timer(0.5, commit.set).start()
            try:
                with transaction.atomic():
                    second()
            except ValidationError as exc:
                raised.append(exc)

    assert run_threads(2, work) == []
    return raised


@pytest.mark.django_db(transaction=True)
def test_an_account_deactivated_meanwhile_is_not_made_the_last_owner(tenant_a, alice):
    carol = UserFactory(username="carol@example.com")
    alices = Membership.objects.get(user=alice, organization=tenant_a.org)
    # Carol owns nothing yet when her account is deactivated.
    raised = _race(lambda: _deactivate(carol), lambda: _hand_ownership(tenant_a.org, alices, carol))
    assert [e.messages for e in raised] == [[LEFT_WITHOUT]]
    assert _roles(tenant_a.org) == {"alice@example.com": OWNER}


@pytest.mark.django_db(transaction=True)
def test_an_account_made_the_last_owner_meanwhile_is_not_deactivated(tenant_a, alice):
    carol = UserFactory(username="carol@example.com")
    alices = Membership.objects.get(user=alice, organization=tenant_a.org)
    raised = _race(lambda: _hand_ownership(tenant_a.org, alices, carol), lambda: _deactivate(carol))
    assert [e.messages for e in raised] == [[LEFT_WITHOUT]]
    assert User.objects.get(pk=carol.pk).is_active
    assert _roles(tenant_a.org) == {"alice@example.com": MEMBER, "carol@example.com": OWNER}

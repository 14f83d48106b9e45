from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from profiles.models import ApiKey, Membership, Organization, Profile
from profiles.services import api_key_authenticate

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_create_org_with_owner_makes_a_staff_owner_ready_for_a_password():
    out = _run(
        "create_org",
        "acme",
        "--name",
        "Acme",
        "--owner-email",
        "ceo@acme.test",
        "--timezone",
        "Europe/Berlin",
    )
    org = Organization.objects.get(slug="acme")
    assert org.name == "Acme" and org.timezone == "Europe/Berlin"
    user = get_user_model().objects.get(email="ceo@acme.test")
    assert user.is_staff and not user.is_superuser
    assert not user.has_usable_password()
    assert Membership.objects.get(user=user, organization=org).role == "owner"
    assert "changepassword" in out


def test_create_org_takes_the_contracts_own_example_address():
    _run("create_org", "acme", "--name", "Acme", "--owner-email", "a@b.c")
    owner = get_user_model().objects.get(email="a@b.c")
    assert Membership.objects.get(user=owner).role == "owner"


@pytest.mark.parametrize(
    "address",
    [
        "not-an-address",
        "a@b",
        "a b@c.d",
        "a@@b.c",
        "@b.c",
        "ops@acme.com>",
        "a@b.c;d",
        "<a>@b.cd",
        "jo,hn@example.com",
        "a@b.c\n",
        "a@b.-",
    ],
)
def test_create_org_refuses_what_is_not_an_address_and_creates_nothing(address):
    with pytest.raises(CommandError, match="mail"):
        _run("create_org", "acme", "--name", "Acme", "--owner-email", address)
    assert not Organization.objects.exists()
    assert not get_user_model().objects.exists()


def test_create_org_duplicate_slug_is_a_clear_error_and_creates_nothing():
    _run("create_org", "acme", "--name", "Acme")
    with pytest.raises(CommandError, match="slug"):
        _run("create_org", "acme", "--name", "Other", "--owner-email", "x@y.test")
    assert Organization.objects.count() == 1
    assert not get_user_model().objects.filter(email="x@y.test").exists()


def test_create_org_bad_timezone_is_a_clear_error():
    with pytest.raises(CommandError, match="time zone"):
        _run("create_org", "acme", "--name", "Acme", "--timezone", "Mars/Olympus")
    assert not Organization.objects.exists()


def test_create_api_key_prints_a_working_secret_last():
    _run("create_org", "acme", "--name", "Acme")
    out = _run(
        "create_api_key",
        "acme",
        "--profile",
        "user-42",
        "--scopes",
        "ingest,read",
        "--name",
        "backend",
    )
    secret = out.strip().splitlines()[-1]
    key = api_key_authenticate(raw=secret)
    assert key.name == "backend"
    assert key.scopes == ["ingest", "read"]
    assert key.profile.external_id == "user-42"


def test_create_api_key_unknown_scope_is_an_error_and_creates_nothing():
    _run("create_org", "acme", "--name", "Acme")
    with pytest.raises(CommandError, match="Unknown scope"):
        _run("create_api_key", "acme", "--profile", "p1", "--scopes", "ingest,admin")
    assert not ApiKey.objects.exists()
    assert not Profile.objects.exists()


def test_create_api_key_unknown_org_is_an_error():
    with pytest.raises(CommandError, match="No organization"):
        _run("create_api_key", "nope")

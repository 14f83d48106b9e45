"""An organization's own settings: what its admin page and any service that
validates it (``full_clean``) accept."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from profiles.models import Organization
from tests.admin_forms import post_form
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _operator() -> Client:
    client = Client()
    client.force_login(UserFactory(username="root@example.com", is_superuser=True))
    return client


def _refused(org: Organization) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        org.full_clean()
    return caught.value.message_dict


@pytest.mark.parametrize("currency", ["-1", "US", "ABC", "US$", "usd"])
def test_a_currency_that_is_no_upper_case_iso_4217_code_is_refused(tenant_a, currency):
    tenant_a.org.currency = currency
    assert list(_refused(tenant_a.org)) == ["currency"]


def test_a_lower_case_currency_is_told_its_capitals(tenant_a):
    tenant_a.org.currency = "eur"
    assert _refused(tenant_a.org)["currency"] == ["Write the currency code in capitals: EUR."]


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "CHF", "ZWG"])
def test_an_iso_4217_currency_is_accepted(tenant_a, currency):
    tenant_a.org.currency = currency
    tenant_a.org.full_clean()


def test_a_new_organization_is_valid_in_its_default_currency():
    org = Organization(slug="fresh", name="Fresh")
    org.full_clean()
    assert org.currency == "USD"


def test_the_organization_page_shows_a_currency_that_is_no_code_as_its_error(tenant_a):
    url = reverse("admin:profiles_organization_change", args=[tenant_a.org.pk])
    resp = post_form(_operator(), url, Organization, currency="-1")
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["currency"] == [
        "'-1' is not an ISO 4217 currency code (such as USD or EUR)."
    ]
    assert Organization.objects.get(pk=tenant_a.org.pk).currency == "USD"

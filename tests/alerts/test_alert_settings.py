"""What an organization's alert settings accept, on its admin page (as its
owner edits them) and from any service that validates the row (``full_clean``)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import reverse

from profiles.models import Organization
from tests.admin_forms import post_form

pytestmark = pytest.mark.django_db


def _refused(org: Organization) -> dict[str, list[str]]:
    with pytest.raises(ValidationError) as caught:
        org.full_clean()
    return caught.value.message_dict


def _post_organization_page(owner, org: Organization, **changes: str):
    client = Client()
    client.force_login(owner)
    url = reverse("admin:profiles_organization_change", args=[org.pk])
    return post_form(client, url, Organization, **changes)


# -- spend spikes: today above spike_factor x the 7-day average, and at least spike_min_cost


@pytest.mark.parametrize("factor", ["-1", "0", "0.5", "1"])
def test_a_spike_factor_of_one_or_less_is_refused(tenant_a, factor):
    # At 1 any day above its average would be a spike; below 1 an ordinary day too.
    tenant_a.org.spike_factor = Decimal(factor)
    assert list(_refused(tenant_a.org)) == ["spike_factor"]


@pytest.mark.parametrize("factor", ["1.01", "3", "9999.99"])
def test_a_spike_factor_above_one_is_accepted(tenant_a, factor):
    tenant_a.org.spike_factor = Decimal(factor)
    tenant_a.org.full_clean()


@pytest.mark.parametrize("floor", ["-1", "-0.000000000001"])
def test_a_negative_spike_minimum_cost_is_refused(tenant_a, floor):
    tenant_a.org.spike_min_cost = Decimal(floor)
    assert _refused(tenant_a.org) == {
        "spike_min_cost": ["The minimum cost is an amount: 0 or more."]
    }


def test_a_spike_minimum_cost_of_zero_is_accepted(tenant_a):
    tenant_a.org.spike_min_cost = Decimal(0)  # no floor: every spike alerts
    tenant_a.org.full_clean()


@pytest.mark.parametrize("field", ["spike_factor", "spike_min_cost"])
def test_the_owner_gets_a_negative_spike_setting_back_as_its_field_error(tenant_a, alice, field):
    resp = _post_organization_page(alice, tenant_a.org, **{field: "-1"})
    assert resp.status_code == 200
    assert list(resp.context["adminform"].form.errors) == [field]
    stored = Organization.objects.get(pk=tenant_a.org.pk)
    assert (stored.spike_factor, stored.spike_min_cost) == (Decimal(3), Decimal(1))


# -- extra recipients: one address a line, read by alert_recipients


@pytest.mark.parametrize(
    ("emails", "bad"),
    [
        ("not-an-address", ["not-an-address"]),
        ("ops@example.com\nnope\n@example.com", ["nope", "@example.com"]),
        # Separated otherwise than by lines, the addresses are one bad line.
        ("ops@example.com, cfo@example.com", ["ops@example.com, cfo@example.com"]),
        ("ops@example.com;cfo@example.com", ["ops@example.com;cfo@example.com"]),
    ],
)
def test_each_extra_alert_recipient_that_is_no_address_is_named(tenant_a, emails, bad):
    tenant_a.org.alert_emails = emails
    assert _refused(tenant_a.org) == {
        "alert_emails": [f"{b!r} is not an e-mail address (one address a line)." for b in bad]
    }


def test_the_extra_alert_recipients_accepted_are_the_ones_alerts_go_to(tenant_a, alice):
    from profiles.selectors import alert_recipients

    tenant_a.org.alert_emails = "  ops@example.com \n\nfinance@b.c\r\n"
    tenant_a.org.full_clean()
    tenant_a.org.save()
    assert alert_recipients(org=tenant_a.org) == [
        "alice@example.com",
        "ops@example.com",
        "finance@b.c",
    ]


def test_the_owner_gets_a_bad_alert_recipient_back_as_its_field_error(tenant_a, alice):
    resp = _post_organization_page(alice, tenant_a.org, alert_emails="ops@example.com\nnope")
    assert resp.status_code == 200
    assert resp.context["adminform"].form.errors["alert_emails"] == [
        "'nope' is not an e-mail address (one address a line)."
    ]
    assert Organization.objects.get(pk=tenant_a.org.pk).alert_emails == ""

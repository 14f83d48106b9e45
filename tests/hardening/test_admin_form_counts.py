"""A formset's forged form count: an inline's post holds no more forms than
its rows and FormCountCapMixin.NEW_ROWS more (Django's own cap, 2,000 forms,
cost a worker seconds per post), and is refused with the formset's error."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib import admin
from django.contrib.admin.options import InlineModelAdmin
from django.test import Client
from django.urls import reverse

from costs.models import AIModel, Price
from profiles.admin_scoping import FormCountCapMixin, TenantInlineMixin
from profiles.models import Membership, Organization
from tests.admin_forms import post_form
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _post_with_forms(client: Client, org: Organization, total: int):
    url = reverse("admin:profiles_organization_change", args=[org.pk])
    changes = {"memberships-TOTAL_FORMS": str(total), "name": "Renamed"}
    return post_form(client, url, Organization, **changes)


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_more_forms_than_rows_and_new_ones_is_refused(tenant_a, alice, bob, who):
    user = UserFactory(is_superuser=True) if who == "superuser" else alice
    client = Client()
    client.force_login(user)
    resp = _post_with_forms(client, tenant_a.org, 2000)
    assert resp.status_code == 200
    formset = resp.context["inline_admin_formsets"][0].formset
    assert formset.absolute_max == 2 + TenantInlineMixin.NEW_ROWS  # alice's, bob's, new
    assert len(formset.forms) == formset.absolute_max
    # Django names max_num, which is 0 where the user may not add members.
    (error,) = formset.non_form_errors()
    assert error.startswith("Please submit at most ")
    tenant_a.org.refresh_from_db()
    assert tenant_a.org.name == "Acme"
    assert Membership.objects.filter(organization=tenant_a.org).count() == 2


def test_a_count_within_the_cap_saves_as_ever(tenant_a, alice, bob):
    client = Client()
    client.force_login(alice)
    resp = _post_with_forms(client, tenant_a.org, 2 + TenantInlineMixin.NEW_ROWS)
    assert resp.status_code == 302  # the blank new forms are ignored
    tenant_a.org.refresh_from_db()
    assert tenant_a.org.name == "Renamed"


def test_every_inline_caps_its_forms():
    inlines = {
        inline for model_admin in admin.site._registry.values() for inline in model_admin.inlines
    }
    assert inlines  # the sweep sees the admin's inlines

    def capped(inline: type) -> bool:
        # Before Django's inline in the class order, or its get_formset never runs.
        mro = inline.__mro__
        return FormCountCapMixin in mro and mro.index(FormCountCapMixin) < mro.index(
            InlineModelAdmin
        )

    assert {i.__name__ for i in inlines if not capped(i)} == set()


def test_a_forged_count_on_a_models_prices_is_refused(catalog):
    """The operators' price rows (read-only, on the model's page): 2,000 forged
    forms took 3.6 s to build and refuse."""
    model = AIModel.objects.filter(prices__isnull=False).first()
    rows = Price.objects.filter(model=model).count()
    client = Client()
    client.force_login(UserFactory(is_superuser=True, is_staff=True))
    url = reverse("admin:costs_aimodel_change", args=[model.pk])
    resp = post_form(client, url, AIModel, **{"prices-TOTAL_FORMS": "2000", "name": "Renamed"})
    assert resp.status_code == 200
    formset = resp.context["inline_admin_formsets"][0].formset
    assert formset.absolute_max == rows + FormCountCapMixin.NEW_ROWS
    assert len(formset.forms) <= formset.absolute_max
    assert formset.non_form_errors()
    model.refresh_from_db()
    assert model.name != "Renamed"


def test_the_cap_counts_only_the_rows_the_inline_shows(catalog, alice, tenant_b):
    """A tenant's staff see the global prices and their own overrides: the
    cap counts those, not the overrides of other tenants it keeps from them."""
    model = AIModel.objects.filter(prices__isnull=False).first()
    shown = Price.objects.filter(model=model).count()
    for day in range(1, 8):
        Price.objects.create(
            model=model,
            organization=tenant_b.org,
            effective_from=datetime(2026, 1, day, tzinfo=UTC),
            input_tokens=Decimal("0.000001"),
        )
    client = Client()
    client.force_login(alice)
    resp = client.get(reverse("admin:costs_aimodel_change", args=[model.pk]))
    assert resp.status_code == 200
    formset = resp.context["inline_admin_formsets"][0].formset
    assert len(formset.forms) == shown
    assert formset.absolute_max == shown + FormCountCapMixin.NEW_ROWS

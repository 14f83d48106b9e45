"""Deleting an organization with price overrides fires the price trigger,
which locks every organization in id order: the deletion takes them all in
that order first, so a change holding a lower organization and waiting for
this one does not wait on it crosswise."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.contrib import admin
from django.test import RequestFactory
from django.utils import timezone

from costs.models import AIModel, Price
from profiles.models import Organization
from profiles.services import organizations_lock
from tests.factories import OrganizationFactory, UserFactory
from tests.quotas.helpers import deleted_while_held


@pytest.mark.django_db(transaction=True)
def test_an_organization_with_overrides_is_deleted_after_a_change_holding_a_lower_one(catalog):
    lower, doomed = sorted([OrganizationFactory(), OrganizationFactory()], key=lambda o: str(o.pk))
    model = AIModel.objects.filter(prices__isnull=False).first()
    Price.objects.create(model=model, organization=doomed, effective_from=timezone.now(),
                         input_tokens=Decimal("0.000001"))  # fmt: skip

    def delete() -> None:
        request = RequestFactory().post("/")
        request.user = UserFactory(is_superuser=True, is_staff=True)
        admin.site._registry[Organization].delete_model(request, doomed)

    # A change to two organizations' setups takes them in id order.
    deleted_while_held(
        lambda: organizations_lock([lower.pk]), lambda: organizations_lock([doomed.pk]), delete
    )
    assert not Organization.objects.filter(pk=doomed.pk).exists()
    assert Organization.objects.filter(pk=lower.pk).exists()

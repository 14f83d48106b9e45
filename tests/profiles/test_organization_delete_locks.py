"""Deleting an organization with price overrides fires the price trigger,
which bumps the setup version of the organizations the deleted prices
concern: its own only. The deletion locks its organization alone, so a
change holding another organization neither holds it up nor waits for it."""

from __future__ import annotations

import threading
from decimal import Decimal

import pytest
from django.contrib import admin
from django.db import transaction
from django.utils import timezone

from costs.models import AIModel, Price
from profiles.models import Organization
from profiles.services import organizations_lock
from tests.admin_forms import operator_post
from tests.factories import OrganizationFactory
from tests.quotas.helpers import InBackground


@pytest.mark.django_db(transaction=True)
def test_an_organization_with_overrides_is_deleted_while_a_change_holds_another(catalog):
    other, doomed = OrganizationFactory(), OrganizationFactory()
    model = AIModel.objects.filter(prices__isnull=False).first()
    Price.objects.create(model=model, organization=doomed, effective_from=timezone.now(),
                         input_tokens=Decimal("0.000001"))  # fmt: skip
    version = Organization.objects.get(pk=other.pk).setup_version
    holding, go = threading.Event(), threading.Event()

    def change() -> None:
        with transaction.atomic():
            organizations_lock([other.pk])
            holding.set()
            assert go.wait(30), "the deletion waited for the other organization"

    with InBackground(change):
        assert holding.wait(30)
        admin.site._registry[Organization].delete_model(operator_post(), doomed)
        go.set()
    assert not Organization.objects.filter(pk=doomed.pk).exists()
    assert Organization.objects.get(pk=other.pk).setup_version == version

"""Deleting a parent of ledger rows locks it first (``parents_lock``), before
Django's collector deletes or updates what refers to it: its rollups, budgets
and counters, which a concurrent ledger write locks after its parents."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models.signals import pre_delete

from costs.models import AIModel, Price
from costs.services.ledger import parents_lock
from profiles.models import ApiKey, Organization, Profile

LEDGER_PARENTS: list[type[models.Model]] = [Organization, Profile, ApiKey, AIModel, Price]


def _lock_before_delete(
    sender: type[models.Model], instance: models.Model, origin: Any = None, **kwargs: Any
) -> None:
    # Only the rows the deletion names: those it takes with them (an
    # organization's keys, a model's prices) are behind their parent's lock,
    # which every ledger write takes too.
    if isinstance(origin, models.QuerySet) and origin.model is not sender:
        return
    if isinstance(origin, models.Model) and not isinstance(origin, sender):
        return
    parents_lock(sender, [instance.pk])


def connect() -> None:
    for model in LEDGER_PARENTS:
        pre_delete.connect(_lock_before_delete, sender=model, dispatch_uid=f"ledger-{model}")

"""What the isolation sweeps need to know about each model and endpoint.

Every tenant-scoped admin model needs a maker here, and every API URL pattern
with arguments needs an entry saying which of the other tenant's objects fills
them; a new model or endpoint without one fails the sweep until it is added
(and so, tested).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import models

from profiles.models import ApiKey, Membership, Organization, Profile
from tests.factories import MembershipFactory, ProfileFactory, UserFactory, make_key

# model -> function(tenant) returning an object of that model owned by the tenant
ADMIN_OBJECT_MAKERS: dict[type[models.Model], Callable[[Any], models.Model]] = {
    Organization: lambda t: t.org,
    Profile: lambda t: ProfileFactory(organization=t.org, external_id=f"{t.org.slug}-hidden"),
    ApiKey: lambda t: make_key(t.org, name=f"{t.org.slug}-hidden-key")[0],
    Membership: lambda t: MembershipFactory(
        organization=t.org, user=UserFactory(username=f"member-of-{t.org.slug}@example.com")
    ),
}

# url name -> function(tenant) returning the kwargs that name the tenant's object
API_URL_KWARGS: dict[str, Callable[[Any], dict[str, str]]] = {
    "profiles-detail": lambda t: {"external_id": t.profile.external_id},
}

"""factory_boy factories for test data."""

from __future__ import annotations

import factory
from django.contrib.auth import get_user_model

from profiles.models import ApiKey, Membership, Organization, Profile
from profiles.services import api_key_create
from quotas.models import Alert


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}@example.com")
    email = factory.LazyAttribute(lambda o: o.username)
    is_staff = True
    password = factory.django.Password("pw-for-tests-1")


class OrganizationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Organization

    slug = factory.Sequence(lambda n: f"org-{n}")
    name = factory.Sequence(lambda n: f"Org {n}")
    timezone = "UTC"


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    user = factory.SubFactory(UserFactory)
    organization = factory.SubFactory(OrganizationFactory)
    role = Membership.Role.MEMBER


class ProfileFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Profile

    organization = factory.SubFactory(OrganizationFactory)
    external_id = factory.Sequence(lambda n: f"user-{n}")
    display_name = factory.LazyAttribute(lambda o: f"Display {o.external_id}")


def make_key(
    org: Organization,
    scopes: str = "ingest,check,read,manage",
    profile: Profile | None = None,
    **kwargs,
) -> tuple[ApiKey, str]:
    issued = api_key_create(
        org=org, name=kwargs.pop("name", "test key"), scopes=scopes, profile=profile, **kwargs
    )
    return issued.api_key, issued.secret


class AlertFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Alert

    organization = factory.SubFactory(OrganizationFactory)
    kind = Alert.Kind.SPEND_SPIKE
    title = factory.Sequence(lambda n: f"alert {n}")
    message = "spent a lot"
    dedup_key = factory.Sequence(lambda n: f"alert:{n}")

"""Shared fixtures: two tenants with owner / member / outsider users.

Org A ("acme") has alice (owner) and bob (member); org B ("globex") has charlie
(owner), who is an outsider to A. Each org has a profile and a full-scope key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import pytest
from rest_framework.test import APIClient

from profiles.models import ApiKey, Membership, Organization, Profile
from tests.factories import (
    MembershipFactory,
    OrganizationFactory,
    ProfileFactory,
    UserFactory,
    make_key,
)


@dataclass
class Tenant:
    org: Organization
    profile: Profile
    key: ApiKey
    secret: str

    def client(self, secret: str | None = None) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret or self.secret}")
        return client


@pytest.fixture
def tenant_a(db) -> Tenant:
    org = OrganizationFactory(slug="acme", name="Acme")
    profile = ProfileFactory(organization=org, external_id="alice-app-user")
    key, secret = make_key(org)
    return Tenant(org, profile, key, secret)


@pytest.fixture
def tenant_b(db) -> Tenant:
    org = OrganizationFactory(slug="globex", name="Globex", timezone="Asia/Tokyo")
    profile = ProfileFactory(organization=org, external_id="globex-secret-user")
    key, secret = make_key(org, name="globex key")
    return Tenant(org, profile, key, secret)


@pytest.fixture
def alice(tenant_a):
    user = UserFactory(username="alice@example.com")
    MembershipFactory(user=user, organization=tenant_a.org, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def bob(tenant_a):
    user = UserFactory(username="bob@example.com")
    MembershipFactory(user=user, organization=tenant_a.org, role=Membership.Role.MEMBER)
    return user


@pytest.fixture
def charlie(tenant_b):
    user = UserFactory(username="charlie@example.com")
    MembershipFactory(user=user, organization=tenant_b.org, role=Membership.Role.OWNER)
    return user


@pytest.fixture
def api_a(tenant_a) -> APIClient:
    return tenant_a.client()


# -- the price catalog ------------------------------------------------------------------

CATALOG_MODELS = {
    ("openai", "gpt-4o"),
    ("openai", "gpt-4o-mini"),
    ("openai", "whisper-1"),
    ("openai", "tts-1"),
    ("openai", "tts-1-hd"),
    ("openai", "dall-e-3"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-pro"),
    ("google", "gemini-2.5-flash"),
    ("elevenlabs", "eleven_multilingual_v2"),
    ("stability", "stable-diffusion-xl"),
    ("bfl", "flux-pro-1.1"),
}


@functools.cache
def _catalog_subset():
    from costs.catalog.source import load_catalog

    rows = [m for m in load_catalog() if (m.provider, m.slug) in CATALOG_MODELS]
    assert {(m.provider, m.slug) for m in rows} == CATALOG_MODELS
    return rows


@pytest.fixture
def catalog(db):
    """A slice of the real global catalog (genai-prices + our extras), synced into the
    test database: enough models for every pricing path, fast enough for any test."""
    from costs.selectors.catalog import catalog_cache_clear
    from costs.services.catalog import catalog_sync

    catalog_cache_clear()
    catalog_sync(catalog=_catalog_subset())
    yield
    catalog_cache_clear()

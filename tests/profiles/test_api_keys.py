from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from profiles.models import ApiKey
from profiles.services import api_key_revoke
from tests.factories import ProfileFactory, make_key

pytestmark = pytest.mark.django_db


def test_key_row_holds_prefix_and_hash_but_never_the_secret(tenant_a):
    key, secret = make_key(tenant_a.org)
    assert secret.startswith(f"sk_{key.prefix}_")
    raw_secret = secret.split("_", 2)[2]
    with connection.cursor() as cur:
        cur.execute("SELECT * FROM profiles_apikey WHERE id = %s", [key.pk])
        row = cur.fetchone()
    flat = " ".join(str(v) for v in row)
    assert raw_secret not in flat
    assert secret not in flat
    assert key.prefix in flat


def test_valid_key_authenticates(tenant_a):
    resp = tenant_a.client().get("/api/v1/profiles")
    assert resp.status_code == 200
    assert [p["external_id"] for p in resp.json()["results"]] == ["alice-app-user"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Token sk_abc_def",
        "Bearer sk_abc",
        "Bearer sk__secret",
        "Bearer notakey",
        "Bearer sk_abc_def extra",
        "Basic dXNlcjpwYXNz",
        "Bearer sk_" + "x" * 300 + "_y",
    ],
)
def test_malformed_authorization_header_is_401_with_contract_body(tenant_a, header):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    resp = client.get("/api/v1/profiles")
    assert resp.status_code == 401
    body = resp.json()
    assert body["error"] == "unauthenticated"
    assert body["message"]
    assert body["details"] == {}


def test_missing_key_is_401(db):
    from rest_framework.test import APIClient

    resp = APIClient().get("/api/v1/profiles")
    assert resp.status_code == 401
    assert resp.json()["error"] == "unauthenticated"


def test_wrong_secret_with_real_prefix_is_401(tenant_a):
    resp = tenant_a.client(f"sk_{tenant_a.key.prefix}_wrongsecret").get("/api/v1/profiles")
    assert resp.status_code == 401


def test_revoked_key_is_401(tenant_a):
    api_key_revoke(key=tenant_a.key)
    resp = tenant_a.client().get("/api/v1/profiles")
    assert resp.status_code == 401
    assert "revoked" in resp.json()["message"]


def test_expired_key_is_401(tenant_a):
    key, secret = make_key(tenant_a.org, expires_at=timezone.now() - timedelta(seconds=1))
    resp = tenant_a.client(secret).get("/api/v1/profiles")
    assert resp.status_code == 401
    assert "expired" in resp.json()["message"]


def test_key_not_yet_expired_works(tenant_a):
    key, secret = make_key(tenant_a.org, expires_at=timezone.now() + timedelta(hours=1))
    assert tenant_a.client(secret).get("/api/v1/profiles").status_code == 200


def test_missing_scope_is_403(tenant_a):
    _, secret = make_key(tenant_a.org, scopes="ingest")
    resp = tenant_a.client(secret).get("/api/v1/profiles")
    assert resp.status_code == 403
    assert resp.json()["error"] == "forbidden"


def test_key_bound_to_profile_cannot_act_for_another_profile(tenant_a):
    other = ProfileFactory(organization=tenant_a.org, external_id="someone-else")
    _, secret = make_key(tenant_a.org, scopes="read", profile=tenant_a.profile)
    client = tenant_a.client(secret)
    assert client.get(f"/api/v1/profiles/{tenant_a.profile.external_id}").status_code == 200
    resp = client.get(f"/api/v1/profiles/{other.external_id}")
    assert resp.status_code == 403
    listing = client.get("/api/v1/profiles").json()["results"]
    assert [p["external_id"] for p in listing] == [tenant_a.profile.external_id]


def test_last_used_is_recorded(tenant_a):
    assert ApiKey.objects.get(pk=tenant_a.key.pk).last_used_at is None
    tenant_a.client().get("/api/v1/profiles")
    assert ApiKey.objects.get(pk=tenant_a.key.pk).last_used_at is not None

"""The pre-flight check while the database is down: the organization's fail mode
answers (API.md: "if the limiter itself fails"), for keys seen before the outage.

The outage is real: this process's connection settings are pointed at a port
nothing listens on and the open connection is closed, so every query fails to
connect, exactly as during a restart or a failover."""

from __future__ import annotations

import contextlib
import socket
from decimal import Decimal

import pytest
from django.core.cache import cache
from django.db import connection

from profiles.services import api_key_revoke
from quotas.models import Reservation
from quotas.services import budget_create
from tests.factories import OrganizationFactory, make_key
from tests.quotas.helpers import CHECK_URL, USAGE_URL, check, post_json

pytestmark = pytest.mark.django_db(transaction=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when the block ends: nothing listens


@contextlib.contextmanager
def database_down():
    settings = connection.settings_dict
    saved = (settings.get("HOST"), settings.get("PORT"))
    connection.close()
    settings["HOST"], settings["PORT"] = "127.0.0.1", str(_closed_port())
    try:
        yield
    finally:
        connection.close()
        settings["HOST"], settings["PORT"] = saved


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def _tenant(slug: str, fail_mode: str):
    org = OrganizationFactory(slug=slug, name=slug, fail_mode=fail_mode)
    budget_create(org=org, name="money", limit=Decimal(10))
    key, secret = make_key(org, scopes="check,ingest,read")
    return org, key, secret


def _client(secret: str):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return client


def test_a_fail_open_organization_is_allowed_degraded_while_the_database_is_down(catalog):
    _, _, secret = _tenant("open-co", "open")
    client = _client(secret)
    assert check(client).status_code == 200  # seen once: remembered
    with database_down():
        response = post_json(
            client,
            CHECK_URL,
            {
                "provider": "openai",
                "model": "gpt-4o",
                "estimate": {"cost": "0.25"},
                "reserve": True,
            },
        )
        priced = check(client)  # meters only: it cannot be priced without the catalog
        ingest = post_json(
            client,
            USAGE_URL,
            {
                "idempotency_key": "k",
                "provider": "openai",
                "model": "gpt-4o",
                "usage": {"input_tokens": 1},
            },
        )
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["allowed"] is True and body["degraded"] is True
    assert body["estimated_cost"] == "0.250000000000"
    assert body["reservation_id"] is None and body["budgets"] == []
    assert priced.status_code == 200 and priced.json()["estimated_cost"] == "0.000000000000"
    assert priced.json()["priced"] is False
    # Recording usage is not a limiter answer: it says the database is unavailable.
    assert ingest.status_code == 503 and ingest.json()["error"] == "unavailable"
    # Back up: answers normally, and nothing was held during the outage.
    again = check(_client(secret), reserve=True)
    assert again.status_code == 200 and "degraded" not in again.json()
    assert Reservation.objects.count() == 1


def test_a_fail_closed_organization_gets_503_limiter_unavailable(catalog):
    _, _, secret = _tenant("closed-co", "closed")
    client = _client(secret)
    assert check(client).status_code == 200
    with database_down():
        response = check(client, reserve=True)
    assert response.status_code == 503
    assert response.json()["error"] == "limiter_unavailable"
    assert response.headers["Retry-After"] == "5"


def test_unknown_wrong_revoked_or_unscoped_keys_get_no_fail_mode_answer(catalog):
    _, key, secret = _tenant("open-co", "open")
    assert check(_client(secret)).status_code == 200
    _, revoked, revoked_secret = _tenant("gone-co", "open")
    assert check(_client(revoked_secret)).status_code == 200
    api_key_revoke(key=revoked)
    org3, _, _ = _tenant("read-co", "open")
    _, read_secret = make_key(org3, scopes="read")
    assert (
        _client(read_secret).get("/api/v1/profiles").status_code == 200
    )  # remembered, no check scope
    never_seen = make_key(org3, scopes="check")[1]
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    with database_down():
        answers = {
            name: check(_client(s))
            for name, s in {
                "wrong secret": wrong,
                "revoked": revoked_secret,
                "no check scope": read_secret,
                "never seen": never_seen,
            }.items()
        }
        # A malformed key needs no database to be refused.
        garbage = check(_client("nonsense"))
    assert garbage.status_code == 401
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.status_code)
        assert response.json()["error"] == "unavailable", name

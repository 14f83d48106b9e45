from __future__ import annotations

import pytest
import time_machine
from django.core.cache import cache

from tests.factories import make_key

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_cache():
    cache.clear()
    yield
    cache.clear()


def test_key_over_its_rate_gets_429_with_retry_after(tenant_a):
    key, secret = make_key(tenant_a.org, scopes="read")
    key.rate_limit_per_minute = 3
    key.save()
    client = tenant_a.client(secret)
    with time_machine.travel("2026-11-22T10:00:10Z", tick=False):
        statuses = [client.get("/api/v1/profiles").status_code for _ in range(4)]
        resp = client.get("/api/v1/profiles")
    assert statuses == [200, 200, 200, 429]
    assert resp.status_code == 429
    assert resp.json()["error"] == "throttled"
    # The window ends at 10:01:00, 50 seconds after the clock.
    assert resp["Retry-After"] == "50"


def test_limit_is_per_key_and_resets_with_the_window(tenant_a):
    key, secret = make_key(tenant_a.org, scopes="read")
    key.rate_limit_per_minute = 1
    key.save()
    limited, other = tenant_a.client(secret), tenant_a.client()
    with time_machine.travel("2026-11-22T10:00:10Z", tick=False):
        assert limited.get("/api/v1/profiles").status_code == 200
        assert limited.get("/api/v1/profiles").status_code == 429
        assert other.get("/api/v1/profiles").status_code == 200
    with time_machine.travel("2026-11-22T10:01:01Z", tick=False):
        assert limited.get("/api/v1/profiles").status_code == 200


def test_default_limit_applies_and_zero_means_unlimited(tenant_a, settings):
    settings.API_RATE_LIMIT_PER_MINUTE = 2
    _, default_secret = make_key(tenant_a.org, scopes="read")
    unlimited, unlimited_secret = make_key(tenant_a.org, scopes="read")
    unlimited.rate_limit_per_minute = 0
    unlimited.save()
    with time_machine.travel("2026-11-22T10:00:10Z", tick=False):
        capped = [
            tenant_a.client(default_secret).get("/api/v1/profiles").status_code for _ in range(3)
        ]
        free = [
            tenant_a.client(unlimited_secret).get("/api/v1/profiles").status_code for _ in range(5)
        ]
    assert capped == [200, 200, 429]
    assert free == [200] * 5


def test_throttled_request_writes_nothing(tenant_a, catalog):
    from costs.models import UsageEvent

    key, secret = make_key(tenant_a.org, scopes="ingest")
    key.rate_limit_per_minute = 1
    key.save()
    client = tenant_a.client(secret)
    body = {"provider": "openai", "model": "gpt-4o", "usage": {"input_tokens": 1}}
    with time_machine.travel("2026-11-22T10:00:10Z", tick=False):
        assert (
            client.post(
                "/api/v1/usage", {**body, "idempotency_key": "a"}, format="json"
            ).status_code
            == 201
        )
        assert (
            client.post(
                "/api/v1/usage", {**body, "idempotency_key": "b"}, format="json"
            ).status_code
            == 429
        )
    assert list(UsageEvent.objects.values_list("idempotency_key", flat=True)) == ["a"]


def test_a_windows_first_requests_arriving_together_are_each_counted_once():
    """The first request of a window adds its counter; requests racing it
    count on the counter it added, none of them starting it again."""
    import threading

    from profiles.api.throttling import _count

    counts: list[int] = []
    start = threading.Barrier(16)

    def request() -> None:
        start.wait()
        counts.append(_count("rl:race:1"))

    threads = [threading.Thread(target=request) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(counts) == list(range(1, 17))
    assert cache.get("rl:race:1") == 16

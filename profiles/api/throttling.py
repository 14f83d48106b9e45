"""Per-key rate limiting: a fixed one-minute window counted in the cache
(Redis in production via CACHE_URL, so every web process shares the count).

One cache operation per request (two for a window's first) and no
per-request history, unlike DRF's SimpleRateThrottle, which stores a
timestamp list per client."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.cache import cache
from rest_framework.throttling import BaseThrottle

if TYPE_CHECKING:  # rest_framework.views imports this module while it loads
    from rest_framework.request import Request
    from rest_framework.views import APIView

WINDOW_SECONDS = 60


class ApiKeyRateThrottle(BaseThrottle):
    """At most the key's ``rate_limit_per_minute`` (else API_RATE_LIMIT_PER_MINUTE)
    requests per minute; 0 switches the limit off. Answered with 429 and
    Retry-After by the error handler."""

    def __init__(self) -> None:
        self._wait = 0.0

    def allow_request(self, request: Request, view: APIView) -> bool:
        key = getattr(request, "auth", None)
        if key is None or not hasattr(key, "prefix"):
            return True  # sessions are staff in the admin's browsable API
        limit = key.rate_limit_per_minute
        if limit is None:
            limit = settings.API_RATE_LIMIT_PER_MINUTE
        if not limit:
            return True
        now = time.time()
        window = int(now // WINDOW_SECONDS)
        count = _count(f"rl:{key.pk}:{window}")
        if count <= limit:
            return True
        self._wait = (window + 1) * WINDOW_SECONDS - now
        return False

    def wait(self) -> float:
        return max(self._wait, 1.0)


def _count(counter: str) -> int:
    """This request counted in the window's counter: one cache operation for
    every request of a window but its first."""
    try:
        return cache.incr(counter)
    except ValueError:  # the window's first request
        if cache.add(counter, 1, WINDOW_SECONDS + 5):
            return 1
        return cache.incr(counter)  # another request added it first

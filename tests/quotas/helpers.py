"""Small helpers shared by the quota tests: JSON calls and counter reads."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from django.db import connection, transaction

from quotas.models import Budget, BudgetPeriod

CHECK_URL = "/api/v1/quota/check"
USAGE_URL = "/api/v1/usage"
BUDGETS_URL = "/api/v1/budgets"

STATUS_KEYS = {
    "id",
    "name",
    "metric",
    "period",
    "limit",
    "spent",
    "reserved",
    "remaining",
    "percent_used",
    "period_start",
    "resets_at",
    "action",
}

# gpt-4o at $2.50 / 1M input and $10 / 1M output tokens:
# 1500 in + 2000 out = 0.00375 + 0.02 = 0.02375
GPT4O_CALL = {"input_tokens": 1500, "output_tokens": 2000}
GPT4O_CALL_COST = Decimal("0.02375")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def post_json(client: Any, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def patch_json(client: Any, url: str, body: Any) -> Any:
    return client.patch(url, data=json.dumps(body), content_type="application/json")


def check(client: Any, **body: Any) -> Any:
    body.setdefault("provider", "openai")
    body.setdefault("model", "gpt-4o")
    body.setdefault("estimate", dict(GPT4O_CALL))
    return post_json(client, CHECK_URL, body)


def ingest(client: Any, key: str, **body: Any) -> Any:
    body.setdefault("provider", "openai")
    body.setdefault("model", "gpt-4o")
    body.setdefault("usage", dict(GPT4O_CALL))
    return post_json(client, USAGE_URL, {"idempotency_key": key, **body})


def dec(value: str | None) -> Decimal:
    assert isinstance(value, str), value
    return Decimal(value)


def when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def status_of(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The budget status called ``name`` in a response's "budgets"."""
    matches = [b for b in body["budgets"] if b["name"] == name]
    assert len(matches) == 1, (name, [b["name"] for b in body["budgets"]])
    return matches[0]


def period_of(budget: Budget, start: datetime | None = None) -> BudgetPeriod:
    """The budget's period starting at ``start`` (the latest one when not given)."""
    qs = BudgetPeriod.objects.filter(budget=budget)
    if start is not None:
        return qs.get(start=start)
    return qs.order_by("-start").first()


def run_threads(
    count: int, work: Callable[[int], None], timeout: float = 60
) -> list[BaseException]:
    """Run ``work(i)`` in ``count`` real threads; each closes its DB connection at the end.
    Returns the exceptions the threads raised; fails if one of them hangs."""
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            work(i)
        except BaseException as exc:  # surfaced by the test, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,), daemon=True) for i in range(count)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [t.name for t in threads if t.is_alive()]
    assert not hung, f"threads did not finish within {timeout}s (deadlock?): {hung}"
    return errors


@contextmanager
def ingestion_in_flight(
    monkeypatch: Any,
    org: Any,
    events: list[Any],
    *,
    hold: float = 1.0,
    until_body_done: bool = False,
) -> Iterator[None]:
    """Record ``events`` (``costs.services.usage_record``) in another thread
    that stops inside its transaction, after its ledger rows, rollups and
    charges and before its COMMIT, for ``hold`` seconds: the body runs while
    the ingestion is in flight. ``until_body_done``: it commits once the body
    is over instead (or after 30 s, when the body waits for it), for a body
    that must see it in flight whatever the machine's speed. On leaving,
    waits for the ingestion and fails with its error, if it had one."""
    import costs.services.ingest as ingest_module
    from costs.services import usage_record

    inside, body_done = threading.Event(), threading.Event()
    after_charge = ingest_module.after_commit_checks

    def slow_commit(*args: Any) -> None:
        after_charge(*args)
        inside.set()
        if until_body_done:
            body_done.wait(30)
        else:
            time.sleep(hold)

    monkeypatch.setattr(ingest_module, "after_commit_checks", slow_commit)
    ingestion = InBackground(lambda: usage_record(org=org, events=events))
    assert inside.wait(10), "the ingestion did not reach its commit"
    try:
        yield
    finally:
        body_done.set()
        ingestion.join(timeout=60)


class InBackground:
    """``work`` run from now on in another thread, with its own database
    connection (a transaction of its own); ``join()``, or leaving a ``with``
    block, waits for it and fails with its error, if it had one."""

    def __init__(self, work: Callable[[], object]) -> None:
        self.errors: list[BaseException] = []
        self._thread = threading.Thread(
            target=lambda: self.errors.extend(run_threads(1, lambda _: work())), daemon=True
        )
        self._thread.start()

    def join(self, timeout: float = 30) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the work in the background did not finish"
        assert self.errors == [], self.errors

    def __enter__(self) -> InBackground:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.join()


class Slowed:
    """``func``, then a pause of ``seconds`` when another thread than the
    test's calls it: that thread holds what ``func`` locked meanwhile.
    ``taken`` is set as the pause begins: the test waits for it, not for
    a guessed time."""

    def __init__(self, func: Callable[..., Any], seconds: float) -> None:
        self.func, self.seconds = func, seconds
        self.taken = threading.Event()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        result = self.func(*args, **kwargs)
        if threading.current_thread() is not threading.main_thread():
            self.taken.set()
            time.sleep(self.seconds)
        return result


def slowed_in_other_threads(func: Callable[..., Any], seconds: float = 1.0) -> Slowed:
    return Slowed(func, seconds)


def priced_call_dims() -> Any:
    """The dimensions a ``priced_call`` event has, for ``quota_check``."""
    from quotas.services import Dimensions

    return Dimensions(None, None, "acme-ai", "custom-x", "chat")


def priced_hold(org: Any, cost: str) -> Any:
    """A reservation of ``cost`` (``quota_check`` with reserve) for a call like
    ``priced_call``'s; the check's result."""
    from quotas.services import quota_check

    return quota_check(
        org=org, dims=priced_call_dims(), amounts={"cost": Decimal(cost)}, reserve=True
    )


def priced_call(key: str, cost: str = "0.30", **fields: Any) -> Any:
    """An event for ``costs.services.usage_record`` that the client priced
    itself (provider acme-ai, model custom-x, operation chat): no catalog
    needed. ``fields`` are other EventInput fields (occurred_at defaults to now)."""
    from django.utils import timezone

    from costs.services import EventInput

    return EventInput(
        idempotency_key=key,
        request_hash=f"h-{key}",
        provider="acme-ai",
        model="custom-x",
        operation="chat",
        usage=fields.pop("usage", {}),
        occurred_at=fields.pop("occurred_at", None) or timezone.now(),
        cost=Decimal(cost),
        **fields,
    )


def until_a_lock_wait(timeout: float = 30, *, sessions: int = 1) -> None:
    """Return once ``sessions`` sessions of this test's database wait on a
    lock (what a test holding a row in another thread waits for before
    letting it go); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0] >= sessions:
                return
        assert time.monotonic() < deadline, f"fewer than {sessions} sessions waited on a lock"
        time.sleep(0.02)


def deleted_while_held(
    take_first: Callable[[], object],
    take_second: Callable[[], object],
    delete: Callable[[], object],
) -> None:
    """``delete`` run while another transaction has done ``take_first`` and
    waits to do ``take_second``, which it does once the deletion is seen
    waiting on a lock; fails with either side's error (a deadlock)."""
    holding, go = threading.Event(), threading.Event()

    def writer() -> None:
        with transaction.atomic():
            take_first()
            holding.set()
            assert go.wait(30)
            take_second()

    with InBackground(writer):
        assert holding.wait(30)
        with InBackground(delete):
            until_a_lock_wait()
            go.set()

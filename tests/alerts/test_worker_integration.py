"""Threshold alerts end to end: a real Celery worker process on the real Redis
broker, a real SMTP server (aiosmtpd) and a webhook receiver, all started here.
The worker runs against this process's test database.

The tenant: alice (owner) and dana (admin) receive alerts, bob (member) does not;
the organization's webhook is signed with ``SECRET``. The budget: $1.00 a month,
block, alerts at 80% and 100%.
"""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from quotas.alerts import AlertSpec, alert_raise
from quotas.models import Alert, Delivery
from quotas.services import budget_create
from quotas.tasks import evaluate_thresholds, send_notifications
from tests.alerts.conftest import (
    celery_publishing_to,
    signature_verifies,
    start_worker,
    wait_until,
)

pytestmark = pytest.mark.django_db(transaction=True)

MILLION = Decimal(1_000_000)
SECRET = "whsec-acme-0123456789abcdef"
RECIPIENTS = {"alice@example.com", "dana@example.com"}

# gpt-4o list price: $2.50 per 1M input tokens, $10 per 1M output tokens.
# First call: 40,000 in + 75,000 out = $0.10 + $0.75 = $0.85 -> 85% of $1.00.
FIRST = {"input_tokens": 40_000, "output_tokens": 75_000}
FIRST_COST = Decimal(40_000) * Decimal("2.50") / MILLION + Decimal(75_000) * 10 / MILLION
# Second call: 20,000 out = $0.20 -> $1.05, 105% of $1.00.
SECOND = {"output_tokens": 20_000}
SECOND_COST = Decimal(20_000) * 10 / MILLION


@pytest.fixture(scope="module")
def pipeline_worker(django_db_setup, worker_broker, smtp_server):
    worker = start_worker(broker=worker_broker, email_url=smtp_server.url)
    yield worker
    worker.stop()


@pytest.fixture
def spend_org(tenant_a, alice, dana, bob, webhook, catalog):
    org = tenant_a.org
    org.webhook_url = webhook.url
    org.webhook_secret = SECRET
    org.save()
    budget = budget_create(
        org=org,
        name="Monthly AI spend",
        metric="cost",
        period="monthly",
        limit=Decimal("1.00"),
        thresholds=[80, 100],
        action="block",
    )
    return tenant_a, budget


def record(tenant, key: str, usage: dict) -> Decimal:
    response = tenant.client().post(
        "/api/v1/usage",
        data=json.dumps(
            {"idempotency_key": key, "provider": "openai", "model": "gpt-4o", "usage": usage}
        ),
        content_type="application/json",
    )
    assert response.status_code == 201, response.content
    return Decimal(response.json()["cost"])


def assert_two_alerts_delivered(smtp, webhook, budget) -> None:
    """Exactly one email and one signed webhook per threshold, with the figures."""
    emails = smtp.accepted
    assert len(emails) == 2, [m.message["Subject"] for m in emails]
    by_kind = {("exceeded" if "exceeded" in m.message["Subject"] else "80"): m for m in emails}
    assert set(by_kind) == {"80", "exceeded"}
    expected = {
        "80": ("$0.85", "$1.00", "85.0%"),
        "exceeded": ("$1.05", "$1.00", "105.0%"),
    }
    for kind, mail in by_kind.items():
        assert set(mail.rcpt_tos) == RECIPIENTS  # owner and admin, not bob the member
        assert "bob@example.com" not in str(mail.message["To"])
        assert mail.message.get_content_type() == "multipart/alternative"
        assert {"text/plain", "text/html"} <= set(mail.content_types())
        spent, limit, percent = expected[kind]
        for body in (mail.text, mail.html):
            assert spent in body
            assert limit in body
            assert percent in body
            assert "Monthly AI spend" in body

    posts = webhook.posts
    assert len(posts) == 2
    for post in posts:
        assert post.path == "/hooks/spend"
        assert signature_verifies(SECRET, post)
        tampered = post.body.replace(b"0.85", b"0.01").replace(b"1.05", b"0.02")
        assert tampered != post.body
        assert not signature_verifies(SECRET, post, body=tampered)
    payloads = sorted((json.loads(p.body)["alert"] for p in posts), key=lambda a: a["threshold"])
    assert [a["threshold"] for a in payloads] == [80, 100]
    assert [Decimal(a["data"]["spent"]) for a in payloads] == [
        FIRST_COST,
        FIRST_COST + SECOND_COST,
    ]
    assert {a["data"]["budget_id"] for a in payloads} == {str(budget.pk)}
    assert {a["organization"] for a in payloads} == {"acme"}

    # The servers have each message before they answer; the worker marks a
    # delivery sent once answered.
    deliveries = Delivery.objects.filter(alert__budget=budget)
    statuses = lambda: sorted(deliveries.values_list("status", flat=True))  # noqa: E731
    assert wait_until(lambda: statuses() == [Delivery.Status.SENT] * 4, 30), statuses()


def assert_reruns_send_nothing_more(worker, smtp, webhook, org) -> None:
    time.sleep(3)
    evaluation = evaluate_thresholds.delay(str(org.pk))
    sending = send_notifications.delay()
    assert worker.task_result(evaluation.id) == "0"  # no new alert
    assert worker.task_result(sending.id) == "0"  # nothing sent
    assert len(smtp.accepted) == 2
    assert len(webhook.posts) == 2
    assert Alert.objects.filter(organization=org).count() == 2


def test_beat_queued_evaluation_on_real_worker_mails_owner_and_admin_and_posts_signed_webhooks(
    pipeline_worker, worker_broker, smtp, webhook, spend_org
):
    tenant, budget = spend_org
    with celery_publishing_to(worker_broker, pipeline_worker.queue):
        assert record(tenant, "beat-1", FIRST) == FIRST_COST == Decimal("0.85")
        evaluate_thresholds.delay(str(tenant.org.pk))  # what beat queues every 5 minutes
        assert wait_until(lambda: smtp.accepted and webhook.posts, 30), pipeline_worker.output

        assert record(tenant, "beat-2", SECOND) == SECOND_COST == Decimal("0.20")
        evaluate_thresholds.delay(str(tenant.org.pk))
        assert wait_until(lambda: len(smtp.accepted) >= 2 and len(webhook.posts) >= 2, 30), (
            pipeline_worker.output
        )

        assert_two_alerts_delivered(smtp, webhook, budget)
        assert_reruns_send_nothing_more(pipeline_worker, smtp, webhook, tenant.org)


def test_usage_crossing_the_alert_zone_alone_gets_owner_and_admin_mailed_by_the_worker(
    pipeline_worker, worker_broker, smtp, webhook, spend_org
):
    """No beat here: the ingest's after-commit hook must queue the evaluation."""
    tenant, budget = spend_org
    with celery_publishing_to(worker_broker, pipeline_worker.queue):
        assert record(tenant, "hook-1", FIRST) == FIRST_COST
        assert wait_until(lambda: smtp.accepted and webhook.posts, 30), (
            "no alert 30 s after recording usage at 85% of the budget: the ingest "
            "queued no threshold evaluation after commit\n" + pipeline_worker.output[-3000:]
        )

        assert record(tenant, "hook-2", SECOND) == SECOND_COST
        assert wait_until(lambda: len(smtp.accepted) >= 2 and len(webhook.posts) >= 2, 30), (
            pipeline_worker.output
        )

        assert_two_alerts_delivered(smtp, webhook, budget)
        assert_reruns_send_nothing_more(pipeline_worker, smtp, webhook, tenant.org)


def test_worker_under_test_settings_sends_mail_to_the_email_url_server(
    django_db_setup, worker_broker, smtp, tenant_a, alice
):
    """The worker started exactly as the brief says: config.settings.test with
    EMAIL_URL=smtp://... must deliver to that SMTP server."""
    worker = start_worker(
        broker=worker_broker, email_url=smtp.url, settings_module="config.settings.test"
    )
    try:
        alert = alert_raise(
            org=tenant_a.org,
            spec=AlertSpec(
                kind=Alert.Kind.UNPRICED_USAGE,
                dedup_key="email-url-check",
                title="Usage recorded for models without a price",
                message="Recorded at cost 0 until a price exists: acme/mystery-model.",
            ),
        )
        with celery_publishing_to(worker_broker, worker.queue):
            sending = send_notifications.delay()
            sent = worker.task_result(sending.id)
    finally:
        worker.stop()
    delivery = Delivery.objects.get(alert=alert)
    assert sent == "1"
    assert delivery.status == Delivery.Status.SENT  # the worker believes it was sent...
    assert wait_until(lambda: smtp.accepted, 5), (
        "...but the SMTP server at EMAIL_URL received nothing: config.settings.test "
        "overrides EMAIL_BACKEND with locmem even when EMAIL_URL is set"
    )
    (mail,) = smtp.accepted
    assert mail.rcpt_tos == ["alice@example.com"]
    assert "acme/mystery-model" in mail.text
    assert "acme/mystery-model" in mail.html

"""Alert evaluation and delivery are idempotent: under real concurrency
(PostgreSQL, threads, separate connections), after a worker dies mid-send, and
across webhook failures and retries."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from decimal import Decimal

import pytest
import time_machine
from django.db import connection
from django.db.models import Count
from django.utils import timezone

from quotas.alerts import AlertSpec, alert_raise, thresholds_evaluate
from quotas.models import Alert, BudgetPeriod, Delivery
from quotas.notify import deliveries_send
from quotas.services import budget_create
from quotas.tasks import send_notifications
from tests.alerts.conftest import celery_publishing_to, raise_unpriced, start_worker, wait_until

BUDGETS = 6
THRESHOLDS = [50, 80, 100]


def run_together(*work):
    """Run each callable in its own thread, released at the same instant by a
    barrier; each thread closes its own database connection."""
    barrier = threading.Barrier(len(work))
    results: list[object] = [None] * len(work)
    errors: list[BaseException] = []

    def runner(i: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[i] = work[i]()
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=runner, args=(i,)) for i in range(len(work))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    return results


@pytest.fixture
def over_budget_org(tenant_a, alice, dana, webhook):
    """Tenant A with six $10 budgets each at $10.50 (105%): every budget has
    reached its 50%, 80% and 100% thresholds."""
    org = tenant_a.org
    org.webhook_url = webhook.url
    org.webhook_secret = "whsec-idempotency"
    org.save()
    budgets = [
        budget_create(
            org=org,
            name=f"Budget {i}",
            metric="cost",
            period="monthly",
            limit=Decimal("10"),
            thresholds=THRESHOLDS,
        )
        for i in range(BUDGETS)
    ]
    BudgetPeriod.objects.filter(budget__in=budgets).update(spent=Decimal("10.50"))
    return org, budgets


@pytest.mark.django_db(transaction=True)
def test_two_evaluations_at_once_raise_each_threshold_exactly_once(over_budget_org):
    org, budgets = over_budget_org

    first, second = run_together(
        lambda: thresholds_evaluate(org=org), lambda: thresholds_evaluate(org=org)
    )

    expected = BUDGETS * len(THRESHOLDS)
    assert len(first) + len(second) == expected  # each alert claimed by exactly one
    assert Alert.objects.filter(organization=org).count() == expected
    per_threshold = (
        Alert.objects.filter(organization=org)
        .values("budget", "threshold")
        .annotate(n=Count("id"))
        .order_by()
    )
    assert {(str(r["budget"]), r["threshold"]) for r in per_threshold} == {
        (str(b.pk), t) for b in budgets for t in THRESHOLDS
    }
    assert {r["n"] for r in per_threshold} == {1}
    # one email (owner + admin) and one webhook per alert
    assert Delivery.objects.filter(alert__organization=org).count() == 2 * expected
    assert thresholds_evaluate(org=org) == []


@pytest.mark.django_db(transaction=True)
def test_two_senders_at_once_deliver_each_alert_exactly_once(over_budget_org, webhook, mailoutbox):
    org, _ = over_budget_org
    alerts = thresholds_evaluate(org=org)
    expected = BUDGETS * len(THRESHOLDS)
    assert len(alerts) == expected

    first, second = run_together(deliveries_send, deliveries_send)

    assert first + second == 2 * expected
    assert len(mailoutbox) == expected
    assert len({m.extra_headers["Message-ID"] for m in mailoutbox}) == expected
    assert all(sorted(m.to) == ["alice@example.com", "dana@example.com"] for m in mailoutbox)
    posted = [json.loads(p.body)["alert"]["id"] for p in webhook.posts]
    assert sorted(posted) == sorted(str(a.pk) for a in alerts)
    deliveries = Delivery.objects.filter(alert__organization=org)
    assert set(deliveries.values_list("status", "attempts")) == {(Delivery.Status.SENT, 1)}

    assert run_together(deliveries_send, deliveries_send) == [0, 0]
    assert len(mailoutbox) == expected
    assert len(webhook.posts) == expected


@pytest.fixture
def killable_worker(django_db_setup, worker_broker, smtp_server):
    worker = start_worker(broker=worker_broker, email_url=smtp_server.url)
    yield worker
    worker.stop()


@pytest.mark.django_db(transaction=True)
def test_delivery_whose_worker_was_killed_mid_send_is_sent_once_after_its_lease_runs_out(
    killable_worker, worker_broker, smtp_email_settings, tenant_a, alice
):
    smtp = smtp_email_settings
    alert = alert_raise(
        org=tenant_a.org,
        spec=AlertSpec(
            kind=Alert.Kind.SPEND_SPIKE,
            dedup_key="spike:org:killed-worker",
            title="Spend spike: $12.00 today vs $1.00/day average",
            message="The organization spent $12.00 so far today.",
        ),
    )
    delivery = alert.deliveries.get()
    assert delivery.channel == Delivery.Channel.EMAIL

    smtp.handler.hold_next = True  # the SMTP server sits on the message's DATA
    with celery_publishing_to(worker_broker, killable_worker.queue):
        send_notifications.delay()
    assert smtp.handler.holding.wait(30), killable_worker.output
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENDING
    assert delivery.attempts == 1
    assert delivery.lease_until > timezone.now()

    killable_worker.kill()  # SIGKILL while the message is in flight
    assert wait_until(lambda: smtp.aborted, 10)
    assert smtp.accepted == []

    # While the dead worker's lease runs, nobody else takes the delivery.
    assert deliveries_send() == 0
    assert smtp.accepted == []

    # Once it has run out, the next run sends it.
    after_lease = delivery.lease_until + timedelta(seconds=1)
    assert deliveries_send(now=after_lease) == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert delivery.attempts == 2
    assert delivery.sent_at is not None
    (mail,) = smtp.accepted
    assert mail.rcpt_tos == ["alice@example.com"]
    assert "$12.00" in mail.text
    assert "$12.00" in mail.html
    # The retry is recognisably the same message as the one cut off.
    (cut_off,) = smtp.aborted
    assert mail.message["Message-ID"] == cut_off.message["Message-ID"]

    # Never again, however much later.
    for later in (timedelta(hours=1), timedelta(days=2)):
        assert deliveries_send(now=after_lease + later) == 0
    assert len(smtp.accepted) == 1
    assert Delivery.objects.get(pk=delivery.pk).attempts == 2


@pytest.mark.django_db
def test_failing_webhook_is_retried_with_backoff_then_sent_once_when_it_recovers(tenant_a, webhook):
    org = tenant_a.org  # no members, no extra recipients: the webhook is the only channel
    org.webhook_url = webhook.url
    org.save()
    t0 = timezone.now().replace(microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(t0, tick=False):
        alert = alert_raise(
            org=org,
            spec=AlertSpec(
                kind=Alert.Kind.UNPRICED_USAGE,
                dedup_key="unpriced:retry",
                title="Usage recorded for models without a price",
                message="openai/gpt-9",
            ),
        )
        (delivery,) = alert.deliveries.all()
        assert delivery.channel == Delivery.Channel.WEBHOOK
        webhook.status = 500
        assert deliveries_send() == 0

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.attempts == 1
    assert "500" in delivery.last_error
    assert delivery.next_attempt_at == t0 + timedelta(seconds=30)
    assert delivery.lease_until is None

    with time_machine.travel(t0 + timedelta(seconds=29), tick=False):
        assert deliveries_send() == 0  # not due yet: no attempt at all
    assert len(webhook.posts) == 1

    t1 = t0 + timedelta(seconds=30)
    with time_machine.travel(t1, tick=False):
        assert deliveries_send() == 0
    delivery.refresh_from_db()
    assert delivery.attempts == 2
    assert delivery.status == Delivery.Status.PENDING
    assert delivery.next_attempt_at == t1 + timedelta(seconds=60)  # the wait doubled
    assert "500" in delivery.last_error
    assert len(webhook.posts) == 2

    webhook.status = 200  # the receiver recovers
    t2 = t1 + timedelta(seconds=60)
    with time_machine.travel(t2, tick=False):
        assert deliveries_send() == 1
    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.SENT
    assert delivery.attempts == 3
    assert delivery.sent_at == t2
    assert delivery.last_error == ""
    assert [p.answered for p in webhook.posts] == [500, 500, 200]

    for later in (timedelta(minutes=5), timedelta(days=1)):
        with time_machine.travel(t2 + later, tick=False):
            assert deliveries_send() == 0
    assert len(webhook.posts) == 3


@pytest.mark.django_db
def test_a_slow_send_does_not_leave_the_next_delivery_to_another_sender(
    tenant_a, alice, monkeypatch
):
    """A run's leases start when each delivery is claimed: after a send that
    outlasted a lease, the next delivery's lease still lies ahead while it is
    sent, so a second sender starting then cannot take it (and send it again)."""
    import quotas.notify as notify

    org = tenant_a.org
    t0 = timezone.now().replace(microsecond=0) + timedelta(minutes=1)
    with time_machine.travel(t0, tick=False) as clock:
        for i in range(2):
            alert_raise(org=org, spec=AlertSpec(kind=Alert.Kind.UNPRICED_USAGE,
                                                dedup_key=f"unpriced:slow-{i}", title="Unpriced",
                                                message=f"openai/gpt-{i}"))  # fmt: skip
        send_email = notify._send_email
        lease_ahead: list[bool] = []

        def slow_send(delivery):
            # A sender starting now could take this one if its lease were over.
            lease = Delivery.objects.get(pk=delivery.pk).lease_until
            lease_ahead.append(lease > timezone.now())
            send_email(delivery)
            clock.shift(notify.LEASE * 1.5)  # this send outlasts a lease

        monkeypatch.setattr(notify, "_send_email", slow_send)
        assert deliveries_send() == 2
    assert lease_ahead == [True, True]
    assert set(
        Delivery.objects.filter(alert__organization=org).values_list("status", flat=True)
    ) == {Delivery.Status.SENT}


@pytest.mark.django_db
def test_a_delivery_whose_worker_stopped_in_its_last_attempt_is_failed_not_sent_again(
    tenant_a, alice, mailoutbox
):
    import quotas.notify as notify

    alert = raise_unpriced(tenant_a.org, "last-attempt")
    (delivery,) = alert.deliveries.all()
    Delivery.objects.filter(pk=delivery.pk).update(
        status=Delivery.Status.SENDING,
        attempts=notify.MAX_ATTEMPTS,
        lease_until=timezone.now() - timedelta(seconds=1),  # its worker is gone
    )

    assert deliveries_send() == 0

    delivery.refresh_from_db()
    assert delivery.status == Delivery.Status.FAILED
    assert delivery.attempts == notify.MAX_ATTEMPTS
    assert mailoutbox == []


@pytest.mark.django_db
def test_the_webhook_text_shows_slack_control_sequences_literally(tenant_a):
    from quotas.notify import webhook_payload

    alert = alert_raise(
        org=tenant_a.org,
        spec=AlertSpec(kind=Alert.Kind.SPEND_SPIKE, dedup_key="spike:slack",
                       title="Spend spike", message="Profile <!channel> & <@U123> spent $5"),
    )  # fmt: skip

    text = webhook_payload(alert)["text"]

    assert text == "*Spend spike*\nProfile &lt;!channel&gt; &amp; &lt;@U123&gt; spent $5"
    assert webhook_payload(alert)["alert"]["id"] == str(alert.id)

"""Sending deliveries: claim with a lease, send, mark; retry with backoff.

A delivery is claimed by a conditional UPDATE (only one worker wins it) that
sets a lease; the winner sends and marks it sent. A worker that dies mid-send
leaves the lease to run out, after which another worker retries. A delivery
marked sent is never picked again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.request
from datetime import datetime, timedelta

from django.db.models import F, Q
from django.utils import timezone

from quotas.emails import email_for
from quotas.models import Alert, Delivery

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
MAX_ATTEMPTS = 8
WEBHOOK_TIMEOUT = 10
SIGNATURE_HEADER = "X-Spend-Signature"
TIMESTAMP_HEADER = "X-Spend-Timestamp"


def backoff(attempts: int) -> timedelta:
    """30 s, 1 min, 2 min, ... capped at an hour."""
    return timedelta(seconds=min(30 * 2 ** max(attempts - 1, 0), 3600))


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex>`` of HMAC-SHA256(secret, "<timestamp>.<body>")."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def webhook_payload(alert: Alert) -> dict[str, object]:
    """Slack-compatible: ``text`` renders anywhere; ``alert`` carries the figures."""
    return {
        "text": f"*{alert.title}*\n{alert.message}",
        "alert": {
            "id": str(alert.id),
            "organization": alert.organization.slug,
            "kind": alert.kind,
            "severity": alert.severity,
            "threshold": alert.threshold,
            "created_at": alert.created_at.isoformat(),
            "data": alert.data,
        },
    }


def _send_webhook(delivery: Delivery) -> None:
    alert = delivery.alert
    body = json.dumps(webhook_payload(alert), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    if alert.organization.webhook_secret:
        headers[SIGNATURE_HEADER] = webhook_signature(
            alert.organization.webhook_secret, timestamp, body
        )
    request = urllib.request.Request(delivery.target, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310
        if not 200 <= response.status < 300:
            raise RuntimeError(f"webhook answered {response.status}")


def _send_email(delivery: Delivery) -> None:
    to = [t.strip() for t in delivery.target.split(",") if t.strip()]
    email_for(delivery.alert, to, f"<delivery-{delivery.pk}-{delivery.alert_id}@spendplane>").send()


def _claim(delivery_id: int, now: datetime) -> bool:
    return bool(
        Delivery.objects.filter(
            Q(lease_until__isnull=True) | Q(lease_until__lte=now),
            pk=delivery_id,
            status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING],
            next_attempt_at__lte=now,
        ).update(
            status=Delivery.Status.SENDING, lease_until=now + LEASE, attempts=F("attempts") + 1
        )
    )


def deliveries_send(*, now: datetime | None = None, limit: int = 200) -> int:
    """Send every due delivery this worker can claim; returns how many were sent."""
    now = now or timezone.now()
    due = list(
        Delivery.objects.filter(
            Q(lease_until__isnull=True) | Q(lease_until__lte=now),
            status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING],
            next_attempt_at__lte=now,
        )
        .order_by("next_attempt_at")
        .values_list("pk", flat=True)[:limit]
    )
    sent = 0
    for delivery_id in due:
        if not _claim(delivery_id, now):
            continue  # another worker has it
        delivery = Delivery.objects.select_related("alert__organization").get(pk=delivery_id)
        try:
            if delivery.channel == Delivery.Channel.WEBHOOK:
                _send_webhook(delivery)
            else:
                _send_email(delivery)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, with its reason kept
            logger.warning("delivery %s failed: %s", delivery_id, exc)
            gave_up = delivery.attempts >= MAX_ATTEMPTS
            Delivery.objects.filter(pk=delivery_id, status=Delivery.Status.SENDING).update(
                status=Delivery.Status.FAILED if gave_up else Delivery.Status.PENDING,
                last_error=f"{exc.__class__.__name__}: {exc}"[:2000],
                next_attempt_at=timezone.now() + backoff(delivery.attempts),
                lease_until=None,
            )
            continue
        Delivery.objects.filter(pk=delivery_id).update(
            status=Delivery.Status.SENT, sent_at=timezone.now(), lease_until=None, last_error=""
        )
        sent += 1
    return sent

"""Sending deliveries: claim with a lease, send, mark; retry with backoff.

A delivery is claimed by a conditional UPDATE (only one worker wins it) that
sets a lease; the winner sends and marks it sent. A worker that dies mid-send
leaves the lease to run out, after which another worker retries. A delivery
marked sent is never picked again.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import logging
import socket
import ssl
import time
import urllib.parse
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from quotas.emails import email_for
from quotas.models import Alert, Delivery

logger = logging.getLogger(__name__)

LEASE = timedelta(seconds=60)
# With the backoff below, about five hours of retries: an SMTP server or a
# receiver down for an afternoon still gets the alert.
MAX_ATTEMPTS = 12
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


def _slack_text(text: str) -> str:
    """``text`` as Slack reads it literally: its control sequences (``<!channel>``,
    ``<@user>``, links) start with ``<``, which a name in an alert may hold."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def webhook_payload(alert: Alert) -> dict[str, object]:
    """Slack-compatible: ``text`` renders anywhere; ``alert`` carries the figures."""
    return {
        "text": f"*{_slack_text(alert.title)}*\n{_slack_text(alert.message)}",
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


class WebhookRefused(Exception):
    """The webhook's address is not one the service posts to."""


def webhook_address(url: str) -> tuple[urllib.parse.SplitResult, int, str]:
    """(the URL's parts, its port, the IP address to connect to) for an
    http(s) URL whose host resolves to public addresses only (unless
    ``WEBHOOK_ALLOW_PRIVATE_ADDRESSES``); WebhookRefused otherwise. The post
    goes to the address checked here, so a name that resolves anew to an
    internal address between the check and the connection gains nothing."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused("the address must be an http or https URL")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        found = socket.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    except (ValueError, OSError) as exc:
        raise WebhookRefused(f"the host cannot be resolved ({exc.__class__.__name__})") from exc
    addresses = [str(info[4][0]) for info in found]
    if not settings.WEBHOOK_ALLOW_PRIVATE_ADDRESSES:
        for address in addresses:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
            if not ip.is_global or ip.is_multicast:
                raise WebhookRefused(
                    "the host resolves to a loopback, private, link-local or reserved address"
                )
    return parts, port, addresses[0]


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """HTTP to ``address``, with the URL's host in the Host header."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to ``address``, the certificate checked against the URL's host."""

    def __init__(self, host: str, port: int, address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]


def _send_webhook(delivery: Delivery) -> None:
    alert = delivery.alert
    body = json.dumps(webhook_payload(alert), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: timestamp}
    if alert.organization.webhook_secret:
        headers[SIGNATURE_HEADER] = webhook_signature(
            alert.organization.webhook_secret, timestamp, body
        )
    parts, port, address = webhook_address(delivery.target)
    connection = (_PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection)(
        parts.hostname or "", port, address, WEBHOOK_TIMEOUT
    )
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    try:
        connection.request("POST", path, body=body, headers=headers)
        status = connection.getresponse().status
    finally:
        connection.close()
    # A redirect is not followed: it could lead anywhere, the checks above included.
    if not 200 <= status < 300:
        raise RuntimeError(f"webhook answered {status}")


def _send_email(delivery: Delivery) -> None:
    to = [t.strip() for t in delivery.target.split(",") if t.strip()]
    email_for(delivery.alert, to, f"<delivery-{delivery.pk}-{delivery.alert_id}@spendplane>").send()


def _claim(delivery_id: int, now: datetime) -> datetime | None:
    """The lease's end if this worker won the delivery, else None. The lease
    runs from ``now``, the moment of the claim: a run's earlier sends must not
    have used it up already, or another worker could take it at once."""
    lease = now + LEASE
    won = (
        _due(now)
        .filter(pk=delivery_id)
        .update(status=Delivery.Status.SENDING, lease_until=lease, attempts=F("attempts") + 1)
    )
    return lease if won else None


def _due(at: datetime) -> QuerySet[Delivery]:
    """Deliveries to attempt at ``at``: not sent, no lease running, their
    backoff over and attempts left."""
    return Delivery.objects.filter(
        Q(lease_until__isnull=True) | Q(lease_until__lte=at),
        status__in=[Delivery.Status.PENDING, Delivery.Status.SENDING],
        next_attempt_at__lte=at,
        attempts__lt=MAX_ATTEMPTS,
    )


def deliveries_send(*, now: datetime | None = None, limit: int = 200) -> int:
    """Send every due delivery this worker can claim; returns how many were sent.
    ``now``: the moment to act at (all claims), instead of the clock at each."""
    start = now or timezone.now()
    # Its worker stopped during its last attempt (the lease ran out): it has
    # had its attempts, as if that one had failed.
    Delivery.objects.filter(
        status=Delivery.Status.SENDING, lease_until__lte=start, attempts__gte=MAX_ATTEMPTS
    ).update(
        status=Delivery.Status.FAILED,
        lease_until=None,
        last_error="The worker sending it stopped during its last attempt.",
    )
    due = list(_due(start).order_by("next_attempt_at").values_list("pk", flat=True)[:limit])
    sent = 0
    for delivery_id in due:
        lease = _claim(delivery_id, now or timezone.now())
        if lease is None:
            continue  # another worker has it
        # Marked only while the lease is this worker's: one that ran out and
        # went to another worker is that worker's to mark.
        ours = Delivery.objects.filter(pk=delivery_id, lease_until=lease)
        delivery = Delivery.objects.select_related("alert__organization").get(pk=delivery_id)
        try:
            if delivery.channel == Delivery.Channel.WEBHOOK:
                _send_webhook(delivery)
            else:
                _send_email(delivery)
        except Exception as exc:  # noqa: BLE001 - any failure is retried, with its reason kept
            gave_up = delivery.attempts >= MAX_ATTEMPTS
            log = logger.error if gave_up else logger.warning
            log("delivery %s failed%s: %s", delivery_id, " for good" if gave_up else "", exc)
            ours.filter(status=Delivery.Status.SENDING).update(
                status=Delivery.Status.FAILED if gave_up else Delivery.Status.PENDING,
                last_error=f"{exc.__class__.__name__}: {exc}"[:2000],
                next_attempt_at=timezone.now() + backoff(delivery.attempts),
                lease_until=None,
            )
            continue
        ours.update(
            status=Delivery.Status.SENT, sent_at=timezone.now(), lease_until=None, last_error=""
        )
        sent += 1
    return sent

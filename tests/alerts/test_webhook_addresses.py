"""Alert webhooks post to public addresses only: an organization's admin
sets the address, and the service must not post for them into its own
network (loopback, private, link-local such as a cloud's metadata service)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.test import override_settings

from quotas.models import Delivery
from quotas.notify import WebhookRefused, deliveries_send, webhook_address
from tests.alerts.conftest import raise_unpriced

PUBLIC = override_settings(WEBHOOK_ALLOW_PRIVATE_ADDRESSES=False)


@PUBLIC
@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.0.1/hook",
        "http://[::1]/hook",
        "http://[fd00::1]/hook",
        "http://0.0.0.0/hook",
        "ftp://93.184.215.14/hook",
        "file:///etc/passwd",
    ],
)
def test_addresses_inside_a_network_and_other_schemes_are_refused(url):
    with pytest.raises(WebhookRefused):
        webhook_address(url)


@PUBLIC
def test_a_public_address_is_taken_with_its_port():
    parts, port, address = webhook_address("https://93.184.215.14:8443/hooks?x=1")
    assert (parts.hostname, port, address) == ("93.184.215.14", 8443, "93.184.215.14")


@PUBLIC
@pytest.mark.django_db
def test_no_post_reaches_a_receiver_on_loopback(tenant_a, webhook):
    org = tenant_a.org  # no members: the webhook is the only channel
    org.webhook_url = webhook.url
    org.save()
    alert = raise_unpriced(org, "ssrf")

    assert deliveries_send() == 0

    assert webhook.posts == []
    (delivery,) = alert.deliveries.all()
    assert delivery.status == Delivery.Status.PENDING  # retried later, as any failure
    assert delivery.last_error.startswith("WebhookRefused: the host resolves to a loopback")


@pytest.mark.django_db
def test_the_organizations_webhook_must_be_http_or_https(tenant_a):
    tenant_a.org.webhook_url = "ftp://example.com/hook"
    with pytest.raises(ValidationError) as refused:
        tenant_a.org.full_clean()
    assert "webhook_url" in refused.value.message_dict

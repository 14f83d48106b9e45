"""An organization with many alert recipients gets its alerts: as many email
deliveries as their addresses need, each recipient in exactly one. And a
periodic task whose work fails for one organization still does the others'."""

from __future__ import annotations

import pytest

from quotas.alerts import email_targets
from quotas.models import Delivery
from quotas.notify import deliveries_send
from tests.alerts.conftest import raise_unpriced
from tests.factories import OrganizationFactory

pytestmark = pytest.mark.django_db

ADDRESSES = [f"finance-team-member-{i:02}@accounting.example.com" for i in range(30)]


def test_the_targets_hold_every_recipient_once_and_fit_their_field():
    targets = email_targets(ADDRESSES)

    assert len(targets) > 1
    limit = Delivery._meta.get_field("target").max_length
    assert all(len(t) <= limit for t in targets)
    assert [a for t in targets for a in t.split(", ")] == sorted(ADDRESSES)


def test_an_alert_reaches_thirty_recipients(tenant_a, mailoutbox):
    org = tenant_a.org
    org.alert_emails = "\n".join(ADDRESSES)
    org.full_clean()
    org.save()

    alert = raise_unpriced(org, "many")

    assert alert is not None
    assert alert.deliveries.count() == len(email_targets(ADDRESSES))
    assert deliveries_send() == alert.deliveries.count()
    received = sorted(address for message in mailoutbox for address in message.to)
    assert received == sorted(ADDRESSES)


def test_a_task_failing_for_one_organization_does_the_others(tenant_a, monkeypatch):
    import costs.tasks as tasks

    broken = OrganizationFactory(slug="aaa-broken")  # first by name and by slug
    done: list[str] = []

    def unpriced_usage_raise(*, org):
        if org.pk == broken.pk:
            raise RuntimeError("this organization's data is broken")
        done.append(org.slug)
        return None

    monkeypatch.setattr(tasks, "unpriced_usage_raise", unpriced_usage_raise)

    assert tasks.unpriced_usage() == 0

    assert tenant_a.org.slug in done

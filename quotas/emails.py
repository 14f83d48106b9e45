"""Alert emails: one function per kind, each rendering a template trio
(``subject.txt``, ``body.txt``, ``body.html``) under ``templates/emails/<kind>/``."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

from quotas.models import Alert


def _message(
    kind: str, context: dict[str, Any], to: list[str], message_id: str
) -> EmailMultiAlternatives:
    subject = " ".join(render_to_string(f"emails/{kind}/subject.txt", context).split())
    text = render_to_string(f"emails/{kind}/body.txt", context)
    html = render_to_string(f"emails/{kind}/body.html", context)
    email = EmailMultiAlternatives(
        subject=subject,
        body=text,
        from_email=settings.DEFAULT_FROM_EMAIL,
        to=to,
        # A stable Message-ID: a retry after a crash mid-send can be recognised
        # as the same message by the receiving side.
        headers={"Message-ID": message_id},
    )
    email.attach_alternative(html, "text/html")
    return email


def _context(alert: Alert) -> dict[str, Any]:
    return {
        "alert": alert,
        "org": alert.organization,
        "data": alert.data,
        "dashboard_url": f"{settings.SITE_URL.rstrip('/')}/admin/",
    }


def threshold_email(alert: Alert, to: list[str], message_id: str) -> EmailMultiAlternatives:
    return _message("threshold", _context(alert), to, message_id)


def daily_summary_email(alert: Alert, to: list[str], message_id: str) -> EmailMultiAlternatives:
    return _message("daily_summary", _context(alert), to, message_id)


def notice_email(alert: Alert, to: list[str], message_id: str) -> EmailMultiAlternatives:
    return _message("notice", _context(alert), to, message_id)


def email_for(alert: Alert, to: list[str], message_id: str) -> EmailMultiAlternatives:
    if alert.kind in (Alert.Kind.THRESHOLD_REACHED, Alert.Kind.BUDGET_EXCEEDED):
        return threshold_email(alert, to, message_id)
    if alert.kind == Alert.Kind.DAILY_SUMMARY:
        return daily_summary_email(alert, to, message_id)
    return notice_email(alert, to, message_id)

"""Every admin changelist, as a superuser and as a tenant's owner, given
nonsense in each query parameter its own page links to (list filters,
ordering, paging, search, date drill-down) and in the generic ones: never a
server error."""

from __future__ import annotations

import html
import re
from urllib.parse import parse_qsl

import pytest
from django.contrib import admin
from django.test import Client
from django.urls import reverse

from tests.factories import UserFactory
from tests.isolation import ADMIN_OBJECT_MAKERS

pytestmark = pytest.mark.django_db

GARBAGE = ["\u2603x", "-1", "99999999999999999999999", "2026-13-45", "x" * 300]
GENERIC = ["o", "p", "q", "_to_field"]
_LINK = re.compile(r'href="\?([^"#]*)"')


def _linked_params(page: str) -> set[str]:
    """The query parameter names the page's own links carry."""
    names: set[str] = set()
    for query in _LINK.findall(page):
        names.update(name for name, _ in parse_qsl(html.unescape(query), keep_blank_values=True))
    return names


@pytest.mark.parametrize("who", ["superuser", "owner"])
def test_every_changelist_answers_nonsense_parameters_without_a_server_error(
    tenant_a, tenant_b, charlie, who
):
    for make in ADMIN_OBJECT_MAKERS.values():  # rows, so filters have choices to link
        make(tenant_a)
        make(tenant_b)
    client = Client(raise_request_exception=False)
    if who == "superuser":
        client.force_login(UserFactory(username="root@example.com", is_superuser=True))
    else:
        client.force_login(charlie)
    failures: list[str] = []
    swept = 0
    for model in admin.site._registry:
        url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
        first = client.get(url)
        if first.status_code != 200:  # not this user's to see
            continue
        swept += 1
        names = _linked_params(first.content.decode()) | set(GENERIC)
        for name in sorted(names):
            for value in GARBAGE:
                resp = client.get(url, {name: value})
                if resp.status_code >= 500:
                    failures.append(f"{url}?{name}={value!r}: {resp.status_code}")
            # PostgreSQL text cannot hold NUL: refused before any filter runs.
            resp = client.get(url, {name: "a\x00b"})
            if resp.status_code != 400:
                failures.append(f"{url}?{name}=NUL: {resp.status_code}, not 400")
    assert swept >= (10 if who == "superuser" else 5), swept
    assert not failures, "\n".join(failures)

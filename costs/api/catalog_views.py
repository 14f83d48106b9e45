"""The catalog as a tenant sees it, and cost estimates."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from pydantic import BaseModel, ConfigDict, Field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from costs.api.schemas import (
    EventInvalid,
    LongName,
    ProviderName,
    Timestamp,
    validate_with_usage,
)
from costs.pricing.engine import METERS
from costs.selectors.pricing import CatalogEntry, cost_estimate, pricing_in_force
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.api.pagination import CappedLimitOffsetPagination, page_parameters, paginated


class EstimateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: ProviderName
    model: LongName
    usage: dict[str, Any] = Field(description="Meters or a provider's raw usage object.")
    at: Timestamp | None = Field(
        default=None, description="Price in force at this moment (default now)."
    )


def _rate(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return format(Decimal(str(value)).normalize(), "f")
    except InvalidOperation:  # an operator's typo in a tier: shown as entered
        return str(value)


def _tier(tier: Any) -> Any:
    """A tier as stored, its rates as plain decimal strings like the unit prices
    (the catalog may hold them in exponent form: "6.00000000000E-7")."""
    rates = tier.get("rates") if isinstance(tier, dict) else None
    if not isinstance(rates, dict):
        return tier
    return {**tier, "rates": {m: _rate(r) for m, r in rates.items()}}


class PricingApi(TenantApiView):
    scopes = {"*": None}  # any scope

    @extend_schema(
        parameters=[
            OpenApiParameter("provider", str),
            OpenApiParameter("model", str),
            *page_parameters(),
        ],
        responses=paginated(
            "PaginatedPricing",
            inline_serializer(
                "PricingEntry",
                {
                    "provider": serializers.CharField(),
                    "model": serializers.CharField(),
                    "aliases": serializers.ListField(child=serializers.CharField()),
                    "price_id": serializers.UUIDField(),
                    "effective_from": serializers.DateTimeField(),
                    "override": serializers.BooleanField(),
                    "currency": serializers.CharField(),
                    "unit_prices": serializers.DictField(child=serializers.CharField()),
                    "tiers": serializers.ListField(child=serializers.DictField()),
                },
                many=True,
            ),
        ),
        operation_id="pricing_list",
    )
    def get(self, request: Request) -> Response:
        entries = pricing_in_force(
            org=self.org,
            at=timezone.now(),
            provider=request.query_params.get("provider"),
            model=request.query_params.get("model"),
        )
        paginator = CappedLimitOffsetPagination()
        # DRF pages any sequence; the stubs only admit querysets.
        page: list[CatalogEntry] | None = paginator.paginate_queryset(
            entries,  # type: ignore[arg-type]
            request,
            view=self,
        )
        assert page is not None  # default_limit is set, so there is always a page
        return paginator.get_paginated_response(
            [
                {
                    "provider": e.model.provider.slug,
                    "model": e.model.slug,
                    "aliases": e.model.aliases,
                    "price_id": str(e.price.pk),
                    "effective_from": e.price.effective_from.isoformat(),
                    "override": e.override,
                    "currency": "USD",
                    "unit_prices": {
                        m: _rate(getattr(e.price, m))
                        for m in METERS
                        if getattr(e.price, m) is not None
                    },
                    "tiers": [_tier(t) for t in e.price.tiers or []],
                }
                for e in page
            ]
        )


class EstimateApi(TenantApiView):
    scopes = {"*": None}  # any scope

    @extend_schema(
        request=EstimateIn,
        responses=inline_serializer(
            "EstimateOut",
            {
                "cost": serializers.CharField(),
                "currency": serializers.CharField(),
                "price_id": serializers.UUIDField(),
                "model": serializers.CharField(),
                "breakdown": serializers.DictField(child=serializers.CharField()),
            },
        ),
        operation_id="estimate",
    )
    def post(self, request: Request) -> Response:
        try:
            data, meters = validate_with_usage(EstimateIn, request.data)
        except EventInvalid as exc:
            raise ApiError("The request is invalid; see details.", details=exc.details) from exc
        estimate = cost_estimate(
            org=self.org,
            provider=data.provider,
            model=data.model,
            usage=meters,
            at=data.at or timezone.now(),
        )
        if not estimate.priced:
            raise ApiError(
                f"The catalog has no price for {data.provider}/{data.model}.",
                code="not_found",
                status_code=404,
            )
        return Response(
            {
                "cost": f"{estimate.cost:.12f}",
                "currency": self.org.currency,
                "price_id": str(estimate.price_id),
                "model": estimate.model,
                "breakdown": {k: f"{v:.12f}" for k, v in estimate.breakdown.items()},
            }
        )

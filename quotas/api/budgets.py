"""Budgets CRUD: read with ``read``, write with ``manage``."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from django.db import transaction
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from costs.selectors.catalog import model_canonical
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.api.pagination import CappedLimitOffsetPagination, page_parameters, paginated
from profiles.models import ApiKey
from profiles.services import organizations_lock
from quotas.models import Budget, validate_thresholds
from quotas.selectors import budget_list, budget_states, budget_status
from quotas.services import budget_create, budget_delete, budget_update


@extend_schema_field(
    {
        "type": "string",
        "pattern": r"^\d{1,12}(\.\d{1,12})?$",
        "example": "10.00",
        "description": "A positive decimal string (a whole number is accepted for counts).",
    }
)
class StrictAmountField(serializers.DecimalField):
    """A positive amount given as a decimal string (or a whole number for counts);
    a JSON number with a fraction is refused: it may already have lost precision."""

    def to_internal_value(self, data: Any) -> Decimal:
        if isinstance(data, bool | Decimal | float):
            self.fail("invalid")
        return super().to_internal_value(data)


class BudgetInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    profile = serializers.CharField(max_length=255, required=False, allow_null=True)
    api_key = serializers.UUIDField(required=False, allow_null=True)
    provider = serializers.CharField(max_length=100, required=False, allow_blank=True)
    model = serializers.CharField(max_length=200, required=False, allow_blank=True)
    operation = serializers.CharField(max_length=100, required=False, allow_blank=True)
    metric = serializers.ChoiceField(choices=Budget.Metric.choices, default=Budget.Metric.COST)
    period = serializers.ChoiceField(choices=Budget.Period.choices, default=Budget.Period.MONTHLY)
    limit = StrictAmountField(max_digits=24, decimal_places=12, min_value=Decimal("0.000000000001"))
    thresholds = serializers.ListField(
        child=serializers.IntegerField(min_value=1, max_value=1000),
        required=False,
        min_length=1,
        max_length=20,
    )
    action = serializers.ChoiceField(choices=Budget.Action.choices, default=Budget.Action.BLOCK)
    active = serializers.BooleanField(default=True)

    def validate_thresholds(self, value: list[int]) -> list[int]:
        from django.core.exceptions import ValidationError as DjangoValidationError

        try:
            validate_thresholds(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from exc
        return sorted(value)


class BudgetOutputSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    profile = serializers.CharField(source="profile.external_id", default=None, allow_null=True)
    api_key = serializers.UUIDField(source="api_key_id", allow_null=True)
    provider = serializers.CharField()
    model = serializers.CharField()
    operation = serializers.CharField()
    metric = serializers.CharField()
    period = serializers.CharField()
    limit = serializers.CharField()
    thresholds = serializers.ListField(child=serializers.IntegerField())
    action = serializers.CharField()
    active = serializers.BooleanField()
    status = serializers.DictField(allow_null=True)


class _BudgetBase(TenantApiView):
    scopes = {"GET": "read", "POST": "manage", "PATCH": "manage", "DELETE": "manage"}

    def resolve_refs(
        self, data: dict[str, Any], *, current: Budget | None = None
    ) -> dict[str, Any]:
        """Turn names into rows. Call inside the write's transaction: a profile
        created here must not outlive a refused request."""
        if data.get("api_key"):
            key = self.scoped(ApiKey.objects.all()).filter(pk=data["api_key"]).first()
            if key is None:
                raise ApiError(
                    "The request is invalid; see details.", details={"api_key": "Unknown API key."}
                )
            data["api_key"] = key
        bound = self.bound_profile
        if bound is not None:
            # A key bound to a profile acts only for it: its budgets are that profile's.
            self.acting_profile(data.get("profile"), create=False)
            data["profile"] = bound
        elif "profile" in data:
            name = data["profile"]
            data["profile"] = self.acting_profile(name, create=True) if name else None
        if data.get("model"):
            provider = data.get("provider", current.provider if current else "")
            data["model"] = model_canonical(model=data["model"], provider=provider)
        return data

    def render(self, budgets: list[Budget]) -> list[dict[str, Any]]:
        states = {s.budget.pk: s for s in budget_states(org=self.org, budgets=budgets)}
        out: list[dict[str, Any]] = []
        for b in budgets:
            row = BudgetOutputSerializer(b).data
            row["limit"] = budget_status(states[b.pk])["limit"]
            row["status"] = budget_status(states[b.pk])
            out.append(row)
        return out

    def get_budget(self, budget_id: uuid.UUID) -> Budget:
        budget = budget_list(org=self.org, profile=self.bound_profile).filter(pk=budget_id).first()
        if budget is None:
            raise ApiError("Not found.", code="not_found", status_code=404)
        return budget


class BudgetListApi(_BudgetBase):
    @extend_schema(
        parameters=page_parameters(),
        responses=paginated("PaginatedBudgets", BudgetOutputSerializer(many=True)),
        operation_id="budgets_list",
    )
    def get(self, request: Request) -> Response:
        paginator = CappedLimitOffsetPagination()
        page = paginator.paginate_queryset(
            budget_list(org=self.org, profile=self.bound_profile),
            request,
            view=self,
        )
        assert page is not None  # None only without a limit, and default_limit is set
        return paginator.get_paginated_response(self.render(list(page)))

    @extend_schema(
        request=BudgetInputSerializer,
        responses={201: BudgetOutputSerializer},
        operation_id="budgets_create",
    )
    def post(self, request: Request) -> Response:
        serializer = BudgetInputSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with transaction.atomic():
            # The organization first, as every change to its setup: resolving
            # may create the profile named, which a batch inside the
            # organization's gate may be creating too.
            organizations_lock([self.org.pk])
            budget = budget_create(
                org=self.org, **self.resolve_refs(dict(serializer.validated_data))
            )
        return Response(self.render([budget])[0], status=201)


class BudgetDetailApi(_BudgetBase):
    @extend_schema(responses=BudgetOutputSerializer, operation_id="budgets_retrieve")
    def get(self, request: Request, budget_id: uuid.UUID) -> Response:
        return Response(self.render([self.get_budget(budget_id)])[0])

    @extend_schema(
        request=BudgetInputSerializer,
        responses=BudgetOutputSerializer,
        operation_id="budgets_update",
    )
    def patch(self, request: Request, budget_id: uuid.UUID) -> Response:
        budget = self.get_budget(budget_id)
        serializer = BudgetInputSerializer(data=request.data, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k in request.data}
        with transaction.atomic():
            organizations_lock([self.org.pk])  # first, as in ``post``
            budget = budget_update(budget=budget, **self.resolve_refs(changes, current=budget))
        return Response(self.render([budget])[0])

    @extend_schema(responses={204: None}, operation_id="budgets_delete")
    def delete(self, request: Request, budget_id: uuid.UUID) -> Response:
        budget_delete(budget=self.get_budget(budget_id))
        return Response(status=204)

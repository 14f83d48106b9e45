"""Pre-flight checks, reservations and budgets."""

from __future__ import annotations

import logging
import math
import uuid
from decimal import Decimal
from typing import Any

from django.db import InterfaceError, OperationalError
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from pydantic import BaseModel, ConfigDict, Field
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from costs.api.schemas import (
    EventInvalid,
    Identifier,
    LongName,
    Name,
    ProviderName,
    parse_money,
    validate_with_usage,
)
from costs.services import preflight_check
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError, error_body
from profiles.api.renderers import FAST_RENDERERS
from profiles.services import api_key_remembered
from quotas.models import Budget
from quotas.selectors import budget_status, tightest
from quotas.services import (
    CheckResult,
    ReservationNotFound,
    reservation_release,
)

logger = logging.getLogger(__name__)

MAX_TTL = 24 * 3600
# Retry-After when a budget that never resets (period "total") refuses: no
# reset to wait for, only its limit being raised or holds let go; a day.
NEVER_RESETS_RETRY_AFTER = 24 * 3600


class QuotaCheckIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    profile: Identifier | None = None
    provider: ProviderName
    model: LongName
    operation: Name = "default"
    estimate: dict[str, Any] = Field(
        description='Usage meters ({"input_tokens": 1500, ...}, a raw provider usage object) '
        'or {"cost": "0.05"}; "requests" says how many requests the call counts as.'
    )
    reserve: bool = False
    reservation_ttl: int = Field(default=300, ge=1, le=MAX_TTL)


class BudgetStatusOut(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    metric = serializers.CharField()
    period = serializers.CharField()
    limit = serializers.CharField()
    spent = serializers.CharField()
    reserved = serializers.CharField()
    remaining = serializers.CharField()
    percent_used = serializers.CharField()
    period_start = serializers.DateTimeField()
    resets_at = serializers.DateTimeField(allow_null=True)
    action = serializers.CharField()
    thresholds = serializers.ListField(child=serializers.IntegerField())


def _check_fields() -> dict[str, serializers.Field]:
    # A new dict each time: a serializer class takes its fields out of the dict.
    return {
        "allowed": serializers.BooleanField(),
        "estimated_cost": serializers.CharField(),
        "currency": serializers.CharField(),
        "priced": serializers.BooleanField(
            help_text="false when the estimate could not be priced (no price for the model)"
        ),
        "degraded": serializers.BooleanField(
            required=False,
            help_text="present (true) only when the limiter failed and the organization "
            "fails open: allowed without a check",
        ),
        "reservation_id": serializers.UUIDField(allow_null=True),
        "expires_at": serializers.DateTimeField(allow_null=True),
        "budgets": BudgetStatusOut(many=True),
    }


CheckOut = inline_serializer("QuotaCheckResult", _check_fields())
# 402/429: the error body, with the check's body both at the top and in details.
CheckDenied = inline_serializer(
    "QuotaCheckDenied",
    {
        "error": serializers.CharField(help_text="quota_exceeded"),
        "message": serializers.CharField(),
        "details": inline_serializer("QuotaCheckDeniedDetails", _check_fields()),
        **_check_fields(),
    },
)


class QuotaCheckApi(TenantApiView):
    scopes = {"*": "check"}
    # The hottest answer: orjson writes it (the same bytes as DRF's renderer).
    renderer_classes = FAST_RENDERERS

    @extend_schema(
        request=QuotaCheckIn,
        responses={200: CheckOut, 402: CheckDenied, 429: CheckDenied},
        operation_id="quota_check",
    )
    def post(self, request: Request) -> Response:
        body = request.data
        estimate = body.get("estimate") if isinstance(body, dict) else None
        usage = (
            {k: v for k, v in estimate.items() if k != "cost"}
            if isinstance(estimate, dict)
            else None
        )
        details: dict[str, str] = {}
        data: QuotaCheckIn | None = None
        meters: dict[str, Any] = {}
        try:
            # An estimate is usage meters, a cost, or both: only meters are normalised.
            data, meters = validate_with_usage(
                QuotaCheckIn, body, field="estimate", usage=usage if usage else False
            )
        except EventInvalid as exc:
            details = exc.details
        cost: Decimal | None = None
        if isinstance(estimate, dict):
            if "cost" in estimate:
                try:
                    cost = parse_money(estimate["cost"])
                except ValueError as exc:
                    details["estimate.cost"] = str(exc)
            elif not usage:
                details.setdefault("estimate", "Give usage meters or a cost.")
        if details or data is None:
            raise ApiError("The request is invalid; see details.", details=details)

        check = preflight_check(
            org=self.org,
            api_key=request.api_key,  # type: ignore[attr-defined]
            acting=self.acting_for(data.profile),
            provider=data.provider,
            model=data.model,
            operation=data.operation,
            meters=meters,
            cost=cost,
            reserve=data.reserve,
            ttl_seconds=data.reservation_ttl,
            org_fresh=True,  # read by this request's authentication
        )
        if check.result is None:
            return _degraded(self.org.fail_mode, self.org.currency, check.cost, check.priced)
        return self._respond(check.result, check.cost, check.priced)

    def handle_exception(self, exc: Exception) -> Response:
        """The database down (a restart, a failover) is the limiter failing too:
        the organization's fail mode answers, not a bare 503. The organization
        is the request's if the key was read before the outage, else the one a
        key remembered from its last use names (``api_key_remembered``)."""
        if isinstance(exc, OperationalError | InterfaceError):
            fallback = self._outage_answer()
            if fallback is not None:
                logger.warning("database unavailable; answering by fail mode: %s", exc)
                return fallback
        return super().handle_exception(exc)

    def _outage_answer(self) -> Response | None:
        request = self.request
        org = getattr(request, "org", None)
        if org is not None:
            fail_mode, currency = org.fail_mode, org.currency
        else:
            parts = request.META.get("HTTP_AUTHORIZATION", "").split()
            if len(parts) != 2 or parts[0].lower() != "bearer":
                return None
            remembered = api_key_remembered(raw=parts[1])
            if remembered is None or "check" not in remembered.scopes:
                return None
            fail_mode, currency = remembered.fail_mode, remembered.currency
        try:
            body = request.data if isinstance(request.data, dict) else {}
        except Exception:  # noqa: BLE001 - a body that does not parse: answered once the database is back
            return None
        estimate = body.get("estimate")
        cost = Decimal(0)
        if isinstance(estimate, dict) and "cost" in estimate:
            try:
                cost = parse_money(estimate["cost"])
            except ValueError:
                return None  # bad input is answered as bad input once the database is back
        try:
            return _degraded(fail_mode, currency, cost, priced=False)
        except ApiError as closed:
            return super().handle_exception(closed)

    def _respond(self, result: CheckResult, cost: Decimal, priced: bool) -> Response:
        body: dict[str, Any] = {
            "allowed": result.allowed,
            "estimated_cost": f"{cost:.12f}",
            "currency": self.org.currency,
            "priced": priced,
            "reservation_id": str(result.reservation.pk) if result.reservation else None,
            "expires_at": result.reservation.expires_at.isoformat() if result.reservation else None,
            "budgets": [budget_status(s) for s in result.states],
        }
        headers: dict[str, str] = {}
        tight = tightest(result.denied or [s for s in result.states if s.budget.action == "block"])
        if tight is not None:
            status = budget_status(tight)
            headers["X-RateLimit-Limit"] = status["limit"]
            headers["X-RateLimit-Remaining"] = status["remaining"]
            if tight.budget.period != Budget.Period.TOTAL:  # a total budget never resets
                headers["X-RateLimit-Reset"] = str(int(tight.period.end.timestamp()))
        if result.allowed:
            return Response(body, status=200, headers=headers)
        if all(s.budget.period != Budget.Period.TOTAL for s in result.denied):
            # The call passes once every budget refusing it has reset: the last reset.
            last = max(s.period.end for s in result.denied)
            wait = max(1, math.ceil((last - timezone.now()).total_seconds()))
        else:
            wait = NEVER_RESETS_RETRY_AFTER
        headers["Retry-After"] = str(wait)
        status_code = 402 if result.money_denied else 429
        names = ", ".join(s.budget.name for s in result.denied)
        return Response(
            {**error_body("quota_exceeded", f"This call would exceed: {names}.", body), **body},
            status=status_code,
            headers=headers,
        )


def _degraded(fail_mode: str, currency: str, cost: Decimal, priced: bool) -> Response:
    """The answer when the limiter cannot: allowed and degraded (fail open), or
    503 limiter_unavailable (fail closed)."""
    if fail_mode == "closed":
        raise ApiError(
            "The limiter is unavailable and this organization fails closed.",
            code="limiter_unavailable",
            status_code=503,
            headers={"Retry-After": "5"},
        )
    return Response(
        {
            "allowed": True,
            "degraded": True,
            "estimated_cost": f"{cost:.12f}",
            "currency": currency,
            "priced": priced,
            "reservation_id": None,
            "expires_at": None,
            "budgets": [],
        }
    )


class ReservationApi(TenantApiView):
    scopes = {"*": "check"}

    @extend_schema(responses={204: None}, operation_id="reservation_release")
    def delete(self, request: Request, reservation_id: uuid.UUID) -> Response:
        try:
            reservation_release(
                org=self.org, reservation_id=reservation_id, profile_id=self.bound_profile_id
            )
        except ReservationNotFound as exc:
            raise ApiError("Not found.", code="not_found", status_code=404) from exc
        return Response(status=204)

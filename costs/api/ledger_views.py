"""Ledger reads: list (cursor-paginated), streamed export, summary (from the
rollups unless a tag or a time range asks for the ledger)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from django.db.models import Model, Q, QuerySet
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response

from costs.api.filters import USAGE_FILTER_PARAMETERS, UsageEventFilter
from costs.exports import EXPORT_FIELDS, csv_rows, json_rows
from costs.models import UsageEvent
from costs.selectors.ledger import (
    ROLLED_UP,
    usage_events,
    usage_summary,
    usage_summary_all_time,
)
from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.api.pagination import paginated
from profiles.models import Profile

_M = TypeVar("_M", bound=Model)
_R = TypeVar("_R")


class UsageEventOutputSerializer(serializers.ModelSerializer):
    profile = serializers.CharField(source="profile.external_id", default=None, allow_null=True)
    cost = serializers.DecimalField(max_digits=24, decimal_places=12)
    revenue = serializers.DecimalField(max_digits=24, decimal_places=12, allow_null=True)
    audio_seconds = serializers.DecimalField(max_digits=24, decimal_places=6)
    price_id = serializers.UUIDField(allow_null=True)

    class Meta:
        model = UsageEvent
        fields = EXPORT_FIELDS


def _bad_cursor() -> ApiError:
    """A cursor this API did not write is bad input (400), not a missing object."""
    return ApiError(
        "The request is invalid; see details.",
        details={"cursor": "Not a cursor of this list: follow the next and previous links."},
    )


class LedgerCursorPagination(CursorPagination):
    """Newest first, by (occurred_at, id): a cursor's position is both, so it
    names one event even where many share a moment (a batch sent without
    occurred_at). DRF's cursor keeps only the first ordering field and
    counts ties with an offset, which broke the ``previous`` link of a page
    inside a run of equal times (it answered an empty page)."""

    page_size: int | None = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering: tuple[str, ...] = ("-occurred_at", "-id")

    def _get_position_from_instance(self, instance: Any, ordering: Any) -> str:
        return f"{instance.occurred_at.isoformat()}|{instance.id}"

    def _position(self, text: str) -> tuple[datetime, uuid.UUID]:
        try:
            at, _, pk = text.partition("|")
            moment = datetime.fromisoformat(at)
            if moment.tzinfo is None:
                raise ValueError(at)
            # In UTC: PostgreSQL refuses offsets of 16 hours or more.
            return moment.astimezone(UTC), uuid.UUID(pk)
        except (ValueError, OverflowError) as exc:
            raise _bad_cursor() from exc

    def decode_cursor(self, request: Request) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound as exc:  # DRF's answer to a cursor it cannot read
            raise _bad_cursor() from exc

    def paginate_queryset(
        self, queryset: QuerySet[_M, _R], request: Request, view: Any = None
    ) -> list[_R] | None:
        # DRF's method, with the position filter on both fields (positions are
        # unique, so the offset DRF keeps for ties stays 0).
        self.request = request
        self.page_size = self.get_page_size(request)
        if not self.page_size:
            return None
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.cursor = self.decode_cursor(request)
        offset, reverse, position = self.cursor if self.cursor else (0, False, None)
        # DRF decodes the position as text (the stubs say int).
        current = cast("str | None", position)
        queryset = queryset.order_by(*(("occurred_at", "id") if reverse else self.ordering))
        if current is not None:
            at, pk = self._position(current)
            if reverse:  # the events before it on the page order: newer ones
                queryset = queryset.filter(occurred_at__gte=at).filter(
                    Q(occurred_at__gt=at) | Q(id__gt=pk)
                )
            else:
                queryset = queryset.filter(occurred_at__lte=at).filter(
                    Q(occurred_at__lt=at) | Q(id__lt=pk)
                )
        results = list(queryset[offset : offset + self.page_size + 1])
        self.page = results[: self.page_size]
        following = (
            self._get_position_from_instance(results[-1], self.ordering)
            if len(results) > len(self.page)
            else None
        )
        if reverse:
            self.page.reverse()
            self.has_next = current is not None or offset > 0
            self.has_previous = following is not None
            self.next_position, self.previous_position = current, following
        else:
            self.has_next = following is not None
            self.has_previous = current is not None or offset > 0
            self.next_position, self.previous_position = following, current
        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page


class _LedgerReadBase(TenantApiView):
    scopes = {"GET": "read"}

    def filters(self, request: Request) -> tuple[Profile | None, UsageEventFilter]:
        """The acting profile and the validated filters of the query (400 if invalid)."""
        profile = self.acting_profile(request.query_params.get("profile"), create=False)
        filterset = UsageEventFilter(
            request.query_params, queryset=usage_events(org=self.org, profile=profile)
        )
        if not filterset.is_valid():
            details = {k: " ".join(v) for k, v in filterset.errors.items()}
            raise ApiError("The query is invalid; see details.", details=details)
        return profile, filterset

    def filtered_events(self, request: Request) -> QuerySet[UsageEvent]:
        return self.filters(request)[1].qs.select_related("profile")


class UsageListApi(_LedgerReadBase):
    @extend_schema(
        parameters=[
            *USAGE_FILTER_PARAMETERS,
            OpenApiParameter("limit", int),
            OpenApiParameter("cursor", str),
        ],
        responses=paginated(
            "PaginatedUsageEvents", UsageEventOutputSerializer(many=True), cursor=True
        ),
        operation_id="usage_list",
    )
    def get(self, request: Request) -> Response:
        paginator = LedgerCursorPagination()
        page = paginator.paginate_queryset(self.filtered_events(request), request, view=self)
        return paginator.get_paginated_response(UsageEventOutputSerializer(page, many=True).data)


class UsageExportApi(_LedgerReadBase):
    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        # ?format= chooses the file, not Accept: a client that sends
        # "Accept: text/csv" gets its CSV (the renderers only write the JSON
        # error bodies, which it gets whatever it accepts).
        return super().perform_content_negotiation(request, force=True)

    @extend_schema(
        parameters=[
            *USAGE_FILTER_PARAMETERS,
            OpenApiParameter("format", str, enum=["csv", "json"], description="default csv"),
        ],
        responses={
            (200, "text/csv"): OpenApiTypes.STR,
            (200, "application/json"): UsageEventOutputSerializer(many=True),
        },
        operation_id="usage_export",
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        fmt = request.query_params.get("format", "csv")
        if fmt not in ("csv", "json"):
            raise ApiError("Unknown export format.", details={"format": "Use csv or json."})
        # Rows stream from a server-side cursor: a million-row export never sits in memory.
        events = self.filtered_events(request)
        if fmt == "csv":
            response = StreamingHttpResponse(csv_rows(events), content_type="text/csv")
            response["Content-Disposition"] = 'attachment; filename="usage.csv"'
        else:
            response = StreamingHttpResponse(json_rows(events), content_type="application/json")
            response["Content-Disposition"] = 'attachment; filename="usage.json"'
        return response


class UsageSummaryApi(_LedgerReadBase):
    @extend_schema(
        parameters=USAGE_FILTER_PARAMETERS,
        responses=inline_serializer(
            "UsageSummary",
            {
                "currency": serializers.CharField(),
                "totals": serializers.DictField(),
                "by_provider": serializers.ListField(child=serializers.DictField()),
            },
        ),
        operation_id="usage_summary",
    )
    def get(self, request: Request) -> Response:
        profile, filterset = self.filters(request)
        given = {k: v for k, v in filterset.form.cleaned_data.items() if v not in (None, "")}
        if given.keys() <= set(ROLLED_UP):
            # Everything the organization (or profile) ever used: the rollups hold it.
            rows = usage_summary_all_time(org=self.org, profile=profile, **given)
        else:  # a tag or a time range: only the ledger has them
            rows = usage_summary(events=filterset.qs)
        by_provider = [_summary_row(r) for r in rows]
        totals: dict[str, Any] = {}
        for r in rows:
            for k, v in r.items():
                if k != "provider":
                    totals[k] = totals.get(k, 0) + (v or 0)
        return Response(
            {
                "currency": self.org.currency,
                "totals": _summary_row(totals)
                if totals
                else _summary_row({"events": 0, "cost": 0}),
                "by_provider": by_provider,
            }
        )


def _summary_row(row: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in row.items():
        if k == "cost":
            out[k] = f"{(v or 0):.12f}"
        elif k == "audio_seconds":
            out[k] = str(v or 0)
        else:
            out[k] = v if k == "provider" else int(v or 0)
    out.setdefault("cost", "0.000000000000")
    return out

"""Alerts API: list, mark read, resolve, mark all read."""

from __future__ import annotations

import uuid

from django.db import models
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response

from profiles.api.base import TenantApiView
from profiles.api.errors import ApiError
from profiles.api.pagination import CappedLimitOffsetPagination, page_parameters, paginated
from quotas.alerts import alert_mark_read, alert_resolve
from quotas.models import Alert


class AlertOutputSerializer(serializers.ModelSerializer):
    budget = serializers.UUIDField(source="budget_id", allow_null=True)
    profile = serializers.CharField(source="profile.external_id", default=None, allow_null=True)

    class Meta:
        model = Alert
        fields = [
            "id",
            "kind",
            "severity",
            "title",
            "message",
            "budget",
            "profile",
            "threshold",
            "data",
            "created_at",
            "read_at",
            "resolved_at",
        ]


class _AlertsView(TenantApiView):
    def profile_alerts(self) -> models.QuerySet[Alert]:
        """The alerts this credential may see: a key bound to a profile sees
        only that profile's (it acts only for it)."""
        alerts = Alert.objects.all()
        if (profile := self.bound_profile) is not None:
            alerts = alerts.filter(profile=profile)
        return alerts


class AlertListApi(_AlertsView):
    # API.md: all four alert endpoints need `manage` (budgets split read/write;
    # alerts do not: a read-only key sees the unread count on the dashboard).
    scopes = {"GET": "manage"}

    @extend_schema(
        parameters=[
            OpenApiParameter("unread", str, enum=["1", "0"]),
            OpenApiParameter("kind", str),
            *page_parameters(),
        ],
        responses=paginated("PaginatedAlerts", AlertOutputSerializer(many=True)),
        operation_id="alerts_list",
    )
    def get(self, request: Request) -> Response:
        alerts = (
            self.scoped(self.profile_alerts()).select_related("profile").order_by("-created_at")
        )
        unread = request.query_params.get("unread")
        if unread not in (None, "", "0", "1", "true", "false"):
            raise ApiError("The query is invalid; see details.", details={"unread": "Use 1 or 0."})
        if unread in ("1", "true"):
            alerts = alerts.filter(read_at__isnull=True)
        if kind := request.query_params.get("kind"):
            alerts = alerts.filter(kind=kind)
        paginator = CappedLimitOffsetPagination()
        page = paginator.paginate_queryset(alerts, request, view=self)
        return paginator.get_paginated_response(AlertOutputSerializer(page, many=True).data)


class _AlertAction(_AlertsView):
    scopes = {"POST": "manage"}

    def alert(self, alert_id: uuid.UUID) -> Alert:
        # A key bound to a profile sees and changes only that profile's alerts.
        return self.get_scoped_or_404(self.profile_alerts(), pk=alert_id)


class AlertReadApi(_AlertAction):
    @extend_schema(request=None, responses=AlertOutputSerializer, operation_id="alerts_read")
    def post(self, request: Request, alert_id: uuid.UUID) -> Response:
        alert = self.alert(alert_id)
        alert_mark_read(org=self.org, alert_ids=[alert.pk])
        alert.refresh_from_db()
        return Response(AlertOutputSerializer(alert).data)


class AlertResolveApi(_AlertAction):
    @extend_schema(request=None, responses=AlertOutputSerializer, operation_id="alerts_resolve")
    def post(self, request: Request, alert_id: uuid.UUID) -> Response:
        alert = self.alert(alert_id)
        alert_resolve(org=self.org, alert_ids=[alert.pk])
        alert.refresh_from_db()
        return Response(AlertOutputSerializer(alert).data)


class AlertReadAllApi(_AlertAction):
    @extend_schema(
        request=None,
        responses=inline_serializer("AlertsReadAll", {"marked": serializers.IntegerField()}),
        operation_id="alerts_read_all",
    )
    def post(self, request: Request) -> Response:
        return Response({"marked": alert_mark_read(org=self.org, profile=self.bound_profile)})

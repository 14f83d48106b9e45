"""Query filters of the ledger reads (list, export, summary)."""

from __future__ import annotations

from datetime import UTC, datetime

import django_filters
from django import forms
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter

from costs.models import UsageEvent
from costs.selectors.ledger import with_tag


class _UtcIsoDateTimeField(django_filters.fields.IsoDateTimeField):
    """An ISO 8601 timestamp, in UTC: PostgreSQL refuses offsets of 16 hours
    or more (Python takes up to 24), and the calendar's ends overflow."""

    def to_python(self, value: object) -> datetime | None:
        moment = super().to_python(value)
        if moment is None:
            return None
        try:
            return moment.astimezone(UTC)
        except OverflowError as exc:
            raise ValidationError("Out of range.") from exc


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = _UtcIsoDateTimeField


class _LowerCharField(forms.CharField):
    def to_python(self, value: object) -> str | None:
        text = super().to_python(value)
        return text.lower() if text else text


class LowerCharFilter(django_filters.CharFilter):
    """Matches the lower-cased value: how provider names are stored."""

    field_class = _LowerCharField


def _tag_format(value: str) -> None:
    if not value.partition(":")[0] or ":" not in value:
        raise ValidationError("Use key:value, e.g. video_id:v-1.")


class UsageEventFilter(django_filters.FilterSet):
    provider = LowerCharFilter(field_name="provider", max_length=100)
    model = django_filters.CharFilter(field_name="model", max_length=200)
    operation = django_filters.CharFilter(field_name="operation", max_length=100)
    since = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = UtcIsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    tag = django_filters.CharFilter(method="filter_tag", max_length=600, validators=[_tag_format])

    class Meta:
        model = UsageEvent
        fields: list[str] = []

    def filter_tag(self, qs: QuerySet[UsageEvent], name: str, value: str) -> QuerySet[UsageEvent]:
        key, _, tag_value = value.partition(":")
        return with_tag(qs, key, tag_value)


USAGE_FILTER_PARAMETERS = [
    OpenApiParameter("profile", str, description="A profile's external_id (404 if unknown)."),
    OpenApiParameter("provider", str),
    OpenApiParameter(
        "model", str, description="The model as resolved by the catalog (e.g. gpt-4o)."
    ),
    OpenApiParameter("operation", str),
    OpenApiParameter("tag", str, description="key:value, e.g. video_id:v-1"),
    OpenApiParameter("since", str, description="ISO 8601, inclusive"),
    OpenApiParameter("until", str, description="ISO 8601, exclusive"),
]

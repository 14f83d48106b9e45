"""Query filters of the ledger reads (list, export, summary)."""

from __future__ import annotations

import django_filters
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter

from costs.models import UsageEvent
from costs.selectors.ledger import with_tag


def _tag_format(value: str) -> None:
    if not value.partition(":")[0] or ":" not in value:
        raise ValidationError("Use key:value, e.g. video_id:v-1.")


class UsageEventFilter(django_filters.FilterSet):
    provider = django_filters.CharFilter(method="filter_provider", max_length=100)
    model = django_filters.CharFilter(field_name="model", max_length=200)
    operation = django_filters.CharFilter(field_name="operation", max_length=100)
    since = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="gte")
    until = django_filters.IsoDateTimeFilter(field_name="occurred_at", lookup_expr="lt")
    tag = django_filters.CharFilter(method="filter_tag", max_length=600, validators=[_tag_format])

    class Meta:
        model = UsageEvent
        fields: list[str] = []

    def filter_provider(
        self, qs: QuerySet[UsageEvent], name: str, value: str
    ) -> QuerySet[UsageEvent]:
        return qs.filter(provider=value.lower())

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

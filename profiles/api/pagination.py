"""Pagination for every list: cursors for the ledger, capped pages elsewhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rest_framework.pagination import CursorPagination, LimitOffsetPagination

if TYPE_CHECKING:
    from drf_spectacular.utils import OpenApiParameter
    from rest_framework.fields import Field
    from rest_framework.serializers import Serializer


class CappedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class CreatedCursorPagination(CursorPagination):
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-created_at"


def page_parameters() -> list[OpenApiParameter]:
    """The OpenAPI query parameters of a capped limit/offset page."""
    from drf_spectacular.utils import OpenApiParameter

    return [
        OpenApiParameter(
            "limit", int, description=f"at most {CappedLimitOffsetPagination.max_limit}"
        ),
        OpenApiParameter("offset", int),
    ]


def paginated(name: str, item: Field, *, cursor: bool = False) -> Serializer:
    """The OpenAPI shape of a page of ``item`` as these paginators render it."""
    from drf_spectacular.utils import inline_serializer
    from rest_framework import serializers

    fields: dict[str, Field] = {
        "next": serializers.URLField(allow_null=True),
        "previous": serializers.URLField(allow_null=True),
        "results": item,
    }
    if not cursor:
        fields = {"count": serializers.IntegerField(), **fields}
    return inline_serializer(name, fields)

"""Pagination for every list: cursors for the ledger, capped pages elsewhere."""

from __future__ import annotations

from rest_framework.pagination import CursorPagination, LimitOffsetPagination


class CappedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 500


class CreatedCursorPagination(CursorPagination):
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 1000
    ordering = "-created_at"

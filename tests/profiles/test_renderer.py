"""The API's JSON renderer writes exactly what DRF's JSONRenderer writes."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from profiles.api.renderers import FastJSONRenderer

PAYLOADS = [
    {"a": 1, "b": [True, False, None], "c": "text"},
    {"cost": "0.012500000000", "id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
    {"at": datetime(2026, 11, 22, 10, 0, tzinfo=UTC), "day": date(2026, 11, 22)},
    {"at": datetime(2026, 11, 22, 10, 0, 1, 500, tzinfo=timezone(timedelta(hours=1)))},
    {"naive": datetime(2026, 1, 1, 12, 30), "t": time(8, 0), "span": timedelta(minutes=90)},
    {"money": Decimal("1.25"), "int": 2**62, "negative": -7},
    {"unicode": "Grüße, 東京 \u2028 line \u2029 paragraph", "quote": 'a "b" \\ c\n\t\x01\x7f'},
    {1: "int key", "nested": {"deep": [[{"x": []}]]}},
    {"lazy": gettext_lazy("Not found."), "detail": ErrorDetail("Bad.", code="invalid")},
    ReturnDict({"k": ReturnList([1, 2], serializer=None)}, serializer=None),
    {"tuple": (1, "two")},
    {"big": 2**70},  # past 64 bits: the standard encoder's turn
    [],
    "plain string",
]


@pytest.mark.parametrize("data", PAYLOADS, ids=range(len(PAYLOADS)))
def test_fast_renderer_writes_drfs_bytes(data):
    assert FastJSONRenderer().render(data) == JSONRenderer().render(data)


def test_fast_renderer_escapes_line_separators_like_drf():
    out = FastJSONRenderer().render({"s": "a\u2028b\u2029c"})
    assert out == b'{"s":"a\\u2028b\\u2029c"}'


def test_fast_renderer_honours_an_indent_asked_for():
    data = {"a": [1, 2]}
    out = FastJSONRenderer().render(data, "application/json; indent=2")
    assert out == JSONRenderer().render(data, "application/json; indent=2")
    assert b"\n  " in out


def test_none_renders_as_an_empty_body():
    assert FastJSONRenderer().render(None) == b""

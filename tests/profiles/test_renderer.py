"""The ingestion endpoints' JSON renderer writes exactly what DRF's JSONRenderer writes."""

from __future__ import annotations

import enum
import json
import uuid
from collections import OrderedDict
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal

import pytest
from django.http import QueryDict
from django.utils.translation import gettext_lazy
from rest_framework.exceptions import ErrorDetail
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.serializer_helpers import ReturnDict, ReturnList

from profiles.api.renderers import FastJSONRenderer


class Colour(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def moved() -> OrderedDict:
    ordered = OrderedDict(a=1, b=2)
    ordered.move_to_end("a")
    return ordered


def payloads() -> list:
    return [
        {"a": 1, "b": [True, False, None], "c": "text"},
        {"cost": "0.012500000000", "id": uuid.UUID("12345678-1234-5678-1234-567812345678")},
        {"at": datetime(2026, 11, 22, 10, 0, tzinfo=UTC), "day": date(2026, 11, 22)},
        {"at": datetime(2026, 11, 22, 10, 0, 1, 500, tzinfo=timezone(timedelta(hours=1)))},
        {"naive": datetime(2026, 1, 1, 12, 30), "t": time(8, 0), "span": timedelta(minutes=90)},
        {"money": Decimal("1.25"), "small": Decimal("0.00001"), "int": 2**62, "negative": -7},
        {"unicode": "Grüße, 東京 \u2028 line \u2029 paragraph", "quote": 'a "b" \\ c\n\t\x01\x7f'},
        {1: "int key", "nested": {"deep": [[{"x": []}]]}},
        {"lazy": gettext_lazy("Not found."), "detail": ErrorDetail("Bad.", code="invalid")},
        ReturnDict({"k": ReturnList([1, 2], serializer=None)}, serializer=None),
        {"ordered": moved(), "query": QueryDict("a=1&a=2")},
        {"tuple": (1, "two"), "enum": Colour.RED, "level": Level.HIGH},
        {"big": 2**70},
        {"gen": (i for i in range(3)), "big": 2**70},
        [],
        "plain string",
    ]


@pytest.mark.parametrize("index", range(len(payloads())))
def test_fast_renderer_writes_drfs_bytes(index):
    # Each side gets its own copy: a generator can be read once.
    fast = FastJSONRenderer().render(payloads()[index])
    assert fast == JSONRenderer().render(payloads()[index])


def test_not_a_number_is_refused_as_drf_refuses_it():
    with pytest.raises(ValueError):
        JSONRenderer().render({"x": Decimal("NaN")})
    with pytest.raises(ValueError):
        FastJSONRenderer().render({"x": Decimal("NaN")})


def test_fast_renderer_escapes_line_separators_like_drf():
    out = FastJSONRenderer().render({"s": "a\u2028b\u2029c"})
    assert out == b'{"s":"a\\u2028b\\u2029c"}'
    assert json.loads(out) == {"s": "a\u2028b\u2029c"}


def test_fast_renderer_honours_an_indent_asked_for():
    data = {"a": [1, 2]}
    out = FastJSONRenderer().render(data, "application/json; indent=2")
    assert out == JSONRenderer().render(data, "application/json; indent=2")
    assert b"\n  " in out


def test_none_renders_as_an_empty_body():
    assert FastJSONRenderer().render(None) == b""

"""JSON that never turns a number into a float.

Numbers with a fraction become ``Decimal`` (so a serializer can tell a JSON
number from the decimal string the contract asks for, and reject it), and the
non-standard ``NaN``/``Infinity`` literals that Python's json accepts are refused.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class DecimalJSONParser(JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
            data = json.loads(text, parse_float=Decimal, parse_constant=_reject_constant)
            if _SURROGATE_ESCAPE.search(text):
                # "\ud800" decodes to a lone surrogate that no database can store.
                json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
            return data
        except (ValueError, UnicodeError, RecursionError) as exc:
            raise ParseError(f"JSON parse error: {exc}") from exc
        except ArithmeticError as exc:  # a number past Decimal's range, e.g. 1e9999999999999999999
            raise ParseError("JSON parse error: a number is out of range.") from exc

"""JSON responses encoded by orjson.

A 1,000-event batch answers with 1,000 results: the standard library's encoder
spent longer writing that answer than PostgreSQL spent storing the events.
The bytes are DRF's JSONRenderer's (compact, UTF-8, U+2028/U+2029 escaped);
whatever orjson has no form of its own for, or writes differently (dates and
times, Decimals, lazy strings), goes through DRF's own encoder.
"""

from __future__ import annotations

from typing import Any

import orjson
from rest_framework.renderers import JSONRenderer
from rest_framework.utils.encoders import JSONEncoder

_DRF = JSONEncoder()
_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_NON_STR_KEYS


class FastJSONRenderer(JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict[str, Any] | None = None,
    ) -> bytes:
        plain = (
            self.compact
            and not self.ensure_ascii
            and self.get_indent(accepted_media_type, renderer_context or {}) is None
        )
        if data is None or not plain:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_DRF.default, option=_OPTIONS)
        except TypeError:  # past orjson's limits (64-bit integers, nesting depth)
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out

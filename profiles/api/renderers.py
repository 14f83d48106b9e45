"""JSON answers encoded by orjson, for the ingestion endpoints.

A 1,000-event batch answers with 1,000 results: the standard library's encoder
spent longer writing that answer than PostgreSQL spent storing the events.
orjson writes the plain JSON types (dict, list, tuple, str, int, bool, None,
UUID) exactly as DRF's JSONRenderer does (compact, UTF-8, U+2028/U+2029
escaped). Anything else in the data (subclasses such as OrderedDict or
ErrorDetail, dates, Decimals) hands the whole answer to DRF's renderer, as do
indented output and values past orjson's limits. Floats are the one plain type
whose spelling can differ (``1e-05`` vs ``1e-5``): the ingestion answers carry
none (money, counts and percentages are strings and integers).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from rest_framework.renderers import BrowsableAPIRenderer, JSONRenderer

_PLAIN_ONLY = (
    orjson.OPT_PASSTHROUGH_SUBCLASS
    | orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _not_plain(value: Any) -> Any:
    raise TypeError(f"{type(value).__name__} is DRF's to encode")


class FastJSONRenderer(JSONRenderer):
    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: Mapping[str, Any] | None = None,
    ) -> bytes:
        plain = (
            self.compact
            and not self.ensure_ascii
            # DRF's get_indent() takes a None media type (its own render() passes one);
            # the stubs ask for a str.
            and self.get_indent(accepted_media_type, renderer_context or {})  # type: ignore[arg-type]
            is None
        )
        if data is None or not plain:
            return super().render(data, accepted_media_type, renderer_context)
        try:
            out = orjson.dumps(data, default=_not_plain, option=_PLAIN_ONLY)
        except TypeError:  # not plain data, or past orjson's limits
            return super().render(data, accepted_media_type, renderer_context)
        if b"\xe2\x80\xa8" in out or b"\xe2\x80\xa9" in out:
            out = out.replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
        return out


# The renderers of the answers orjson writes: JSON by default, DRF's browsable
# page for a browser that asks for HTML.
FAST_RENDERERS = [FastJSONRenderer, BrowsableAPIRenderer]

"""Request bodies of the usage API, validated with pydantic (fast enough for
1,000-event batches, and one definition serves validation and the OpenAPI schema).

Money and decimal quantities arrive as JSON strings; the JSON parser turns any
JSON number with a fraction into ``Decimal``, which these types refuse for money
with a message saying to send a string. Nothing here ever builds a float.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from costs.pricing.normalize import UsageError, normalize_usage
from quotas.periods import TOTAL_END, TOTAL_START

MAX_BATCH = 1000
MAX_TAGS = 50
_DECIMAL_RE = re.compile(r"^\d{1,12}(\.\d{1,12})?$")


def parse_money(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str):
        raise ValueError('send amounts as decimal strings, e.g. "0.023750"')
    if not _DECIMAL_RE.fullmatch(value):
        raise ValueError(
            "must be a non-negative decimal string with at most 12 digits before "
            "and 12 after the point"
        )
    try:
        return Decimal(value)
    except InvalidOperation as exc:  # pragma: no cover - the pattern already guards
        raise ValueError("not a decimal") from exc


def _aware(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str) and len(value) <= 64:
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError("must be an ISO 8601 timestamp with an offset") from exc
    else:
        raise ValueError("must be an ISO 8601 timestamp string with an offset")
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError("must carry a UTC offset, e.g. 2026-11-22T10:00:00Z")
    # In UTC: a budget that never resets counts [TOTAL_START, TOTAL_END), and
    # an offset must not carry a moment out of it (2000-01-01T00:30+01:00 is 1999).
    if not TOTAL_START <= parsed < TOTAL_END:
        raise ValueError("must be between the years 2000 and 2999 (UTC)")
    # In UTC from here on: PostgreSQL reads offsets up to 15:59 only, and a
    # batch sends its times as text (+20:00 refused the whole batch).
    return parsed.astimezone(UTC)


def _no_nul(value: str) -> str:
    # PostgreSQL text cannot hold NUL; refuse it here rather than fail at INSERT.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _trimmed(value: str) -> str:
    value = value.strip()
    if not value:
        raise ValueError("must not be blank")
    return value


Money = Annotated[Decimal, BeforeValidator(parse_money)]
Timestamp = Annotated[datetime, BeforeValidator(_aware)]
# Strings: strict, with their lengths checked by pydantic's core. The length
# constraints come before the Python validators on purpose: placed after one,
# pydantic runs each as a Python callback, thirteen calls per event.
Identifier = Annotated[
    str, Field(strict=True, min_length=1, max_length=255), AfterValidator(_no_nul)
]
Name = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=100),
    AfterValidator(_no_nul),
    AfterValidator(_trimmed),
]
LongName = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=200),
    AfterValidator(_no_nul),
    AfterValidator(_trimmed),
]

PROVIDER_MAX = 100


def _provider(value: str) -> str:
    # Lower-cased as it is stored, then measured: "İ" lower-cases to two
    # characters, and 60 of them passed as 100-character names went over.
    value = value.lower()
    if len(value) > PROVIDER_MAX:
        raise ValueError(f"must have at most {PROVIDER_MAX} characters once lower-cased")
    return value


# A provider's name as it is stored and matched: trimmed and lower-cased.
ProviderName = Annotated[
    str,
    Field(strict=True, min_length=1, max_length=PROVIDER_MAX),
    AfterValidator(_no_nul),
    AfterValidator(_trimmed),
    AfterValidator(_provider),
]
TagKey = Annotated[str, Field(strict=True, min_length=1, max_length=100), AfterValidator(_no_nul)]
TagValue = Annotated[str, Field(strict=True, max_length=500), AfterValidator(_no_nul)]


def _tags(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags")
    return value


class UsageEventIn(BaseModel):
    """One AI call's usage. Send ``usage`` (meters or a provider's raw usage object),
    ``cost``, or both."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: Identifier
    profile: Identifier | None = None
    provider: ProviderName
    model: LongName
    operation: Name = "default"
    usage: dict[str, Any] | None = Field(
        default=None,
        description="Meters (input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, "
        "input_audio_tokens, output_audio_tokens, characters, images, audio_seconds, requests) or "
        "a raw OpenAI / Anthropic / Google usage object.",
    )
    cost: Money | None = Field(
        default=None, description="Decimal string, for services the catalog does not price."
    )
    occurred_at: Timestamp | None = None
    tags: Annotated[dict[TagKey, TagValue], AfterValidator(_tags)] = Field(default_factory=dict)
    revenue: Money | None = None
    reservation_id: uuid.UUID | None = None

    @field_validator("reservation_id", mode="before")
    @classmethod
    def _uuid_string(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, str):
            raise ValueError("must be a UUID string")
        return value

    @model_validator(mode="after")
    def _usage_or_cost(self) -> UsageEventIn:
        if self.usage is None and self.cost is None:
            raise ValueError("send usage, cost, or both")
        return self


class UsageBatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Each event is judged alone (a non-object gets its own 400 entry).
    events: list[Any] = Field(min_length=1, max_length=MAX_BATCH)


# The canonical form: sorted keys, compact, ASCII (anything else escaped), Decimals
# as strings. One encoder for every fingerprint: json.dumps with options builds
# a new one per call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


def request_hash(raw: dict[str, Any]) -> str:
    """Fingerprint of an event body as sent (key order does not matter).

    orjson writes the canonical form byte for byte whenever its output is
    printable ASCII plus escapes (it writes other characters raw where the
    canonical form escapes them); other bodies, and those past orjson's
    limits, take the standard library's encoder. Fingerprints never change."""
    try:
        text = orjson.dumps(raw, default=str, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # an integer past 64 bits, or nesting past orjson's depth
        text = b""
    if not text or not text.isascii() or b"\x7f" in text:
        text = _CANONICAL.encode(raw).encode()
    return hashlib.sha256(text).hexdigest()


def pydantic_errors(exc: ValidationError, prefix: str = "") -> dict[str, str]:
    """pydantic's errors as the contract's ``details``: dotted field path -> message."""
    details: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "non_field_errors"
        message = err["msg"].removeprefix("Value error, ")
        key = f"{prefix}{loc}" if loc != "non_field_errors" or not prefix else prefix.rstrip(".")
        details.setdefault(key, message)
    return details


M = TypeVar("M", bound=BaseModel)


def validate_with_usage(
    model: type[M], raw: Any, *, field: str = "usage", usage: Any = None
) -> tuple[M, dict[str, int | Decimal]]:
    """Validate ``raw`` with ``model`` and normalise its usage object (``raw[field]``,
    or ``usage`` when given), reporting both sets of field errors at once.
    Raises ``EventInvalid`` with the contract's ``details``."""
    if not isinstance(raw, dict):
        raise EventInvalid({"non_field_errors": "Send a JSON object."})
    details: dict[str, str] = {}
    instance: M | None = None
    try:
        instance = model.model_validate(raw)
    except ValidationError as exc:
        details = pydantic_errors(exc)
    meters: dict[str, int | Decimal] = {}
    usage = raw.get(field) if usage is None else usage
    if isinstance(usage, dict):
        try:
            meters = normalize_usage(usage)
        except UsageError as exc:
            details.pop(field, None)
            details.update(exc.with_prefix(field))
    if details or instance is None:
        raise EventInvalid(details)
    return instance, meters


def parse_event(raw: Any) -> tuple[UsageEventIn, dict[str, int | Decimal]]:
    """Validate one event body; raise ``EventInvalid`` with field messages."""
    if not isinstance(raw, dict):
        raise EventInvalid({"non_field_errors": "each event must be a JSON object"})
    return validate_with_usage(UsageEventIn, raw)


class EventInvalid(Exception):
    def __init__(self, details: dict[str, str]) -> None:
        super().__init__("invalid event")
        self.details = details

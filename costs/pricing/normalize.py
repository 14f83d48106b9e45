"""Usage normaliser: validate a raw usage object and map it onto the fixed meter contract.

Pure Python (no Django, no DB). :func:`normalize_usage` accepts either our plain meters or a
provider's own usage object, validates every quantity, and returns a dict with ALL ten meters of
:data:`costs.pricing.engine.METERS` (0 when absent; ``audio_seconds`` is always a ``Decimal``).

Meter semantics (shared with the engine)
----------------------------------------
``input_tokens`` is the TOTAL input and INCLUDES ``cached_input_tokens``, ``cache_write_tokens``
and ``input_audio_tokens`` (disjoint subsets, as in OpenAI's ``prompt_tokens``).
``output_tokens`` is the TOTAL output and INCLUDES ``output_audio_tokens`` and reasoning tokens.

Recognised shapes (by keys)
---------------------------
1. Plain meters: any subset of the ten meter names. Any other key is an error.
2. OpenAI Chat Completions ``usage`` (has ``prompt_tokens`` or ``completion_tokens``):
   input = prompt_tokens, cached = prompt_tokens_details.cached_tokens,
   input_audio = prompt_tokens_details.audio_tokens, output = completion_tokens (already includes
   reasoning), output_audio = completion_tokens_details.audio_tokens.
3. OpenAI Responses ``usage`` (``input_tokens``/``output_tokens`` together with
   ``input_tokens_details``, ``output_tokens_details`` or ``total_tokens``):
   input = input_tokens, cached = input_tokens_details.cached_tokens, output = output_tokens.
4. Anthropic ``usage`` (has ``cache_read_input_tokens``, ``cache_creation_input_tokens``,
   ``cache_creation``, ``server_tool_use`` or ``service_tier``). Anthropic's ``input_tokens``
   EXCLUDES the cache, so input = input_tokens + cache_read + cache_creation,
   cached = cache_read_input_tokens, cache_write = cache_creation_input_tokens. (A bare
   ``{"input_tokens", "output_tokens"}`` Anthropic object is read as plain meters, which is the
   same thing when there is no cache.)
5. Google Gemini ``usageMetadata`` (has a ``...TokenCount`` key, camelCase or snake_case, or is
   wrapped as ``{"usageMetadata": {...}}`` / ``{"usage_metadata": {...}}``; other keys next to
   the wrapper, e.g. the rest of a GenerateContentResponse, are ignored):
   input = promptTokenCount + toolUsePromptTokenCount, cached = cachedContentTokenCount,
   output = candidatesTokenCount + thoughtsTokenCount (thoughts are billed as output),
   input_audio = AUDIO entries of promptTokensDetails minus AUDIO entries of cacheTokensDetails
   (promptTokenCount includes the cached content, so cached audio is already in ``cached`` and
   must not be counted twice), output_audio = AUDIO entries of candidatesTokensDetails.

Provider objects tolerate keys we do not know (providers add fields all the time) and treat
``null`` as absent, but they may not be mixed with plain meter names they do not define (e.g.
``images`` next to ``prompt_tokens``): that would silently drop or double-bill usage. Objects
matching more than one provider shape are rejected as ambiguous.

Validation
----------
Every problem is collected and raised once as :class:`UsageError`. Keys of ``errors`` are paths
RELATIVE to the usage object (``"input_tokens"``, ``"prompt_tokens_details.cached_tokens"``,
``"usageMetadata.promptTokensDetails[0].tokenCount"``); problems with the object as a whole use
the key :data:`OBJECT_KEY` (``"usage"``). :meth:`UsageError.with_prefix` builds caller-facing
paths.

* Counts must be JSON integers: ``bool`` is not an integer, floats (even ``1.0``), Decimals and
  numeric strings are rejected. They must be ``>= 0`` and ``<= 10**15``.
* ``audio_seconds`` accepts an int, a ``Decimal`` or a decimal string (``"330.5"``); it must be
  finite, ``>= 0``, ``<= 10**12`` with at most 6 decimal places. A Python float is rejected with
  a message asking for a decimal string: JSON parsers hand out binary floats and money code here
  never touches them.
* Subsets may not exceed their totals: cached + cache_write + input_audio <= input_tokens and
  output_audio <= output_tokens. The error is reported on the subset field(s). Cross-field checks
  are skipped for meters whose source fields already failed validation, to avoid noise.
* Normalised sums (Anthropic input, Gemini input/output) are capped at ``10**15`` too.
* An empty object and a non-object are errors on :data:`OBJECT_KEY`.
"""

from __future__ import annotations

import decimal
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from .engine import COUNT_METERS, INPUT_SUBSETS, METERS, OUTPUT_SUBSETS

MAX_COUNT: int = 10**12
"""Largest accepted count (tokens, characters, images, requests)."""

MAX_AUDIO_SECONDS: int = 10**11
"""Largest accepted ``audio_seconds``."""

AUDIO_SECONDS_PLACES: int = 6
"""Maximum decimal places of ``audio_seconds`` (microsecond resolution)."""

OBJECT_KEY: str = "usage"
"""Error key used for problems with the usage object as a whole."""

# Strict decimal literal: no sign other than a leading minus (reported as "negative"), no
# exponent, no whitespace, no "NaN"/"Infinity", no underscores (Decimal() would accept those).
_DECIMAL_STRING = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")
# Longest string we bother parsing: 10**12 with 6 decimals is 20 chars; leave room for zeros.
_MAX_DECIMAL_STRING_LENGTH = 64
_AUDIO_QUANTUM = Decimal(1).scaleb(-AUDIO_SECONDS_PLACES)
# Explicit context so a caller's ambient decimal settings (precision, traps) cannot change
# validation outcomes.
_AUDIO_CONTEXT = decimal.Context(prec=50, traps=[decimal.InvalidOperation])

_COUNT_MESSAGE = "Must be a non-negative integer."

# Keys whose presence identifies a provider shape.
_CHAT_MARKERS = frozenset({"prompt_tokens", "completion_tokens"})
_RESPONSES_MARKERS = frozenset({"input_tokens_details", "output_tokens_details", "total_tokens"})
_RESPONSES_REQUIRES = frozenset({"input_tokens", "output_tokens"})
_ANTHROPIC_MARKERS = frozenset(
    {
        "cache_read_input_tokens",
        "cache_creation_input_tokens",
        "cache_creation",
        "server_tool_use",
        "service_tier",
    }
)
# (camelCase, snake_case) pairs for every Gemini count field we read.
_GEMINI_COUNT_FIELDS: dict[str, tuple[str, str]] = {
    "prompt": ("promptTokenCount", "prompt_token_count"),
    "candidates": ("candidatesTokenCount", "candidates_token_count"),
    "cached": ("cachedContentTokenCount", "cached_content_token_count"),
    "thoughts": ("thoughtsTokenCount", "thoughts_token_count"),
    "tool_use": ("toolUsePromptTokenCount", "tool_use_prompt_token_count"),
    "total": ("totalTokenCount", "total_token_count"),
}
_GEMINI_DETAIL_FIELDS: dict[str, tuple[str, str]] = {
    "prompt": ("promptTokensDetails", "prompt_tokens_details"),
    "candidates": ("candidatesTokensDetails", "candidates_tokens_details"),
    "cache": ("cacheTokensDetails", "cache_tokens_details"),
}
_GEMINI_MARKERS = frozenset(name for pair in _GEMINI_COUNT_FIELDS.values() for name in pair)
_GEMINI_WRAPPERS = ("usageMetadata", "usage_metadata")

# Plain meter names each provider shape defines natively (all others are "mixing" errors).
_NATIVE_METERS: dict[str, frozenset[str]] = {
    "OpenAI Chat Completions": frozenset(),
    "OpenAI Responses": frozenset({"input_tokens", "output_tokens"}),
    "Anthropic": frozenset({"input_tokens", "output_tokens"}),
    "Google Gemini": frozenset(),
}


class UsageError(ValueError):
    """Raised by :func:`normalize_usage` with every validation problem found.

    ``errors`` maps a path relative to the usage object (or :data:`OBJECT_KEY` for the object
    itself) to a human-readable message, e.g. ``{"input_tokens": "Must be a non-negative
    integer."}``.
    """

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors: dict[str, str] = dict(errors)
        super().__init__("; ".join(f"{path}: {msg}" for path, msg in self.errors.items()))

    def with_prefix(self, prefix: str) -> dict[str, str]:
        """Return ``errors`` with paths prefixed for the caller, e.g. ``"usage.input_tokens"``.

        The object-level key maps to ``prefix`` itself, so ``with_prefix("usage")`` turns
        ``{"usage": ..., "input_tokens": ...}`` into ``{"usage": ..., "usage.input_tokens": ...}``.
        """
        return {
            (prefix if path == OBJECT_KEY else f"{prefix}.{path}"): message
            for path, message in self.errors.items()
        }


@dataclass
class _Parsed:
    """Meters read from one shape, plus what the cross-field checks need.

    ``tainted`` holds meters with a source field that failed validation (their value is then
    meaningless); ``src`` maps a meter to the path to blame in cross-field errors.
    """

    meters: dict[str, int | Decimal] = field(
        default_factory=lambda: {m: (Decimal(0) if m == "audio_seconds" else 0) for m in METERS}
    )
    tainted: set[str] = field(default_factory=set)
    src: dict[str, str] = field(default_factory=lambda: {m: m for m in METERS})

    def set_sum(self, meter: str, parts: list[int | None], path: str) -> None:
        """Set ``meter`` to the sum of ``parts``; a None part (invalid field) taints it."""
        self.src[meter] = path
        if any(part is None for part in parts):
            self.tainted.add(meter)
            return
        self.meters[meter] = sum(part for part in parts if part is not None)


class _Reader:
    """Validates individual values and accumulates errors by path."""

    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def error(self, path: str, message: str) -> None:
        # First error per path wins: it is the most specific one.
        self.errors.setdefault(path, message)

    def count(self, value: object, path: str) -> int | None:
        """Validate a count; return it, or None (and record an error) when invalid."""
        # type() not isinstance(): bool subclasses int and must not pass as 1/0.
        if type(value) is bool:
            self.error(path, "Must be a non-negative integer, not a boolean.")
            return None
        if isinstance(value, str):
            self.error(path, "Must be a non-negative integer, not a string.")
            return None
        if type(value) is not int:
            # floats (including 1.0, inf, nan) and Decimals: counts are exact JSON integers.
            self.error(path, _COUNT_MESSAGE)
            return None
        if value < 0:
            self.error(path, _COUNT_MESSAGE)
            return None
        if value > MAX_COUNT:
            self.error(path, f"Must be at most {MAX_COUNT}.")
            return None
        return value

    def optional_count(self, container: Mapping[str, Any], key: str, path: str) -> int | None:
        """Provider count field: absent or null means 0."""
        value = container.get(key)
        if value is None:
            return 0
        return self.count(value, path)

    def optional_mapping(
        self, container: Mapping[str, Any], key: str, path: str
    ) -> Mapping[str, Any] | None:
        """Provider nested object: absent or null means empty; None signals an error."""
        value = container.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.error(path, "Must be a JSON object.")
            return None
        return value

    def audio_seconds(self, value: object, path: str) -> Decimal | None:
        """Validate ``audio_seconds``; return a Decimal, or None when invalid."""
        if type(value) is bool:
            self.error(path, "Must be a non-negative decimal number, not a boolean.")
            return None
        if isinstance(value, float):
            self.error(
                path,
                'Send audio_seconds as a decimal string (e.g. "330.5") or an integer, '
                "not a binary floating-point number.",
            )
            return None
        if isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, Decimal):
            # Check finiteness before any comparison: comparing sNaN raises.
            if not value.is_finite():
                self.error(path, "Must be a finite number.")
                return None
            number = value
        elif isinstance(value, str):
            if len(value) > _MAX_DECIMAL_STRING_LENGTH or not _DECIMAL_STRING.fullmatch(value):
                self.error(path, 'Must be a finite decimal number such as "330.5".')
                return None
            number = Decimal(value)
        else:
            self.error(path, 'Must be a non-negative decimal number such as "330.5".')
            return None
        if number < 0:
            self.error(path, "Must be non-negative.")
            return None
        if number > MAX_AUDIO_SECONDS:
            self.error(path, f"Must be at most {MAX_AUDIO_SECONDS}.")
            return None
        # Values are <= 10**12, so 6 dp fit in the 50-digit context; quantize is lossless iff
        # the value has at most 6 significant decimals, which lets "1.5000000" through
        # (trailing zeros carry no precision).
        quantized = number.quantize(_AUDIO_QUANTUM, context=_AUDIO_CONTEXT)
        if quantized != number:
            self.error(path, f"Must have at most {AUDIO_SECONDS_PLACES} decimal places.")
            return None
        exponent = number.as_tuple().exponent
        if isinstance(exponent, int) and exponent > 0:
            # Decimal("1E+3") -> Decimal("1000"): keep stored/displayed values plain.
            number = number.quantize(Decimal(1), context=_AUDIO_CONTEXT)
        elif isinstance(exponent, int) and exponent < -AUDIO_SECONDS_PLACES:
            number = quantized  # drop zeros beyond 6 dp
        # Decimal("-0") passes the sign check; return a plain zero instead.
        return number if number != 0 else Decimal(0)


def _parse_plain(raw: Mapping[str, Any], reader: _Reader) -> _Parsed:
    parsed = _Parsed()
    unknown = sorted(str(key) for key in raw if key not in METERS)
    if unknown:
        reader.error(
            OBJECT_KEY,
            f"Unknown field(s): {', '.join(unknown)}. Expected meters ({', '.join(METERS)}) "
            "or a provider usage object (OpenAI, Anthropic, Google Gemini).",
        )
    for meter in METERS:
        if meter not in raw:
            continue
        if meter == "audio_seconds":
            seconds = reader.audio_seconds(raw[meter], meter)
            if seconds is None:
                parsed.tainted.add(meter)
            else:
                parsed.meters[meter] = seconds
        else:
            parsed.set_sum(meter, [reader.count(raw[meter], meter)], meter)
    return parsed


def _parse_openai_chat(raw: Mapping[str, Any], reader: _Reader) -> _Parsed:
    parsed = _Parsed()
    prompt = reader.optional_count(raw, "prompt_tokens", "prompt_tokens")
    completion = reader.optional_count(raw, "completion_tokens", "completion_tokens")
    reader.optional_count(raw, "total_tokens", "total_tokens")  # validated, not used
    parsed.set_sum("input_tokens", [prompt], "prompt_tokens")
    # completion_tokens already includes reasoning and audio output tokens.
    parsed.set_sum("output_tokens", [completion], "completion_tokens")

    ptd = reader.optional_mapping(raw, "prompt_tokens_details", "prompt_tokens_details")
    cached_path = "prompt_tokens_details.cached_tokens"
    in_audio_path = "prompt_tokens_details.audio_tokens"
    if ptd is None:
        parsed.set_sum("cached_input_tokens", [None], cached_path)
        parsed.set_sum("input_audio_tokens", [None], in_audio_path)
    else:
        cached = reader.optional_count(ptd, "cached_tokens", cached_path)
        in_audio = reader.optional_count(ptd, "audio_tokens", in_audio_path)
        parsed.set_sum("cached_input_tokens", [cached], cached_path)
        parsed.set_sum("input_audio_tokens", [in_audio], in_audio_path)

    ctd = reader.optional_mapping(raw, "completion_tokens_details", "completion_tokens_details")
    out_audio_path = "completion_tokens_details.audio_tokens"
    if ctd is None:
        parsed.set_sum("output_audio_tokens", [None], out_audio_path)
    else:
        # Informational breakdowns of completion_tokens: validated, billed via output_tokens.
        for key in ("reasoning_tokens", "accepted_prediction_tokens", "rejected_prediction_tokens"):
            reader.optional_count(ctd, key, f"completion_tokens_details.{key}")
        out_audio = reader.optional_count(ctd, "audio_tokens", out_audio_path)
        parsed.set_sum("output_audio_tokens", [out_audio], out_audio_path)
    return parsed


def _parse_openai_responses(raw: Mapping[str, Any], reader: _Reader) -> _Parsed:
    parsed = _Parsed()
    parsed.set_sum(
        "input_tokens", [reader.optional_count(raw, "input_tokens", "input_tokens")], "input_tokens"
    )
    parsed.set_sum(
        "output_tokens",
        [reader.optional_count(raw, "output_tokens", "output_tokens")],
        "output_tokens",
    )
    reader.optional_count(raw, "total_tokens", "total_tokens")  # validated, not used

    cached_path = "input_tokens_details.cached_tokens"
    itd = reader.optional_mapping(raw, "input_tokens_details", "input_tokens_details")
    cached = None if itd is None else reader.optional_count(itd, "cached_tokens", cached_path)
    parsed.set_sum("cached_input_tokens", [cached], cached_path)

    otd = reader.optional_mapping(raw, "output_tokens_details", "output_tokens_details")
    if otd is not None:
        # Reasoning is already inside output_tokens; validated only.
        reader.optional_count(otd, "reasoning_tokens", "output_tokens_details.reasoning_tokens")
    return parsed


def _parse_anthropic(raw: Mapping[str, Any], reader: _Reader) -> _Parsed:
    parsed = _Parsed()
    uncached = reader.optional_count(raw, "input_tokens", "input_tokens")
    cache_read = reader.optional_count(raw, "cache_read_input_tokens", "cache_read_input_tokens")
    cache_creation = reader.optional_count(
        raw, "cache_creation_input_tokens", "cache_creation_input_tokens"
    )
    output = reader.optional_count(raw, "output_tokens", "output_tokens")
    # Anthropic's input_tokens excludes the cache; our input_tokens is the total.
    parsed.set_sum("input_tokens", [uncached, cache_read, cache_creation], "input_tokens")
    parsed.set_sum("cached_input_tokens", [cache_read], "cache_read_input_tokens")
    parsed.set_sum("cache_write_tokens", [cache_creation], "cache_creation_input_tokens")
    parsed.set_sum("output_tokens", [output], "output_tokens")

    # The 5m/1h split of cache writes is validated but not billed separately: the contract has
    # a single cache_write meter. server_tool_use and service_tier are tolerated and ignored.
    creation = reader.optional_mapping(raw, "cache_creation", "cache_creation")
    if creation is not None:
        for key in ("ephemeral_5m_input_tokens", "ephemeral_1h_input_tokens"):
            reader.optional_count(creation, key, f"cache_creation.{key}")
    return parsed


def _gemini_field(
    obj: Mapping[str, Any], names: tuple[str, str], prefix: str, reader: _Reader
) -> tuple[object, str]:
    """Return (value, path) of a Gemini field given as camelCase or snake_case (not both)."""
    camel, snake = names
    if camel in obj and snake in obj:
        reader.error(f"{prefix}{snake}", f"Duplicate of {camel}; send only one spelling.")
    key = camel if camel in obj else snake
    return obj.get(key), f"{prefix}{key}"


def _gemini_modality_tokens(
    obj: Mapping[str, Any], names: tuple[str, str], modality: str, prefix: str, reader: _Reader
) -> tuple[int | None, str]:
    """Sum ``tokenCount`` of entries with ``modality`` in a Gemini ``*TokensDetails`` list."""
    value, path = _gemini_field(obj, names, prefix, reader)
    if value is None:
        return 0, path
    if not isinstance(value, list):
        reader.error(path, "Must be a list of {modality, tokenCount} objects.")
        return None, path
    total: int | None = 0
    for index, entry in enumerate(value):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            reader.error(entry_path, "Must be a JSON object.")
            total = None
            continue
        entry_modality = entry.get("modality")
        if entry_modality is not None and not isinstance(entry_modality, str):
            reader.error(f"{entry_path}.modality", "Must be a string.")
            total = None
            continue
        # Gemini omits tokenCount when it is 0.
        count_key = "token_count" if "token_count" in entry else "tokenCount"
        count = reader.optional_count(entry, count_key, f"{entry_path}.{count_key}")
        if count is None:
            total = None
        elif total is not None and (entry_modality or "").upper() == modality:
            total += count
    return total, path


def _parse_gemini(obj: Mapping[str, Any], prefix: str, reader: _Reader) -> _Parsed:
    parsed = _Parsed()
    counts: dict[str, int | None] = {}
    paths: dict[str, str] = {}
    for name, names in _GEMINI_COUNT_FIELDS.items():
        value, paths[name] = _gemini_field(obj, names, prefix, reader)
        counts[name] = 0 if value is None else reader.count(value, paths[name])

    prompt_audio, prompt_details_path = _gemini_modality_tokens(
        obj, _GEMINI_DETAIL_FIELDS["prompt"], "AUDIO", prefix, reader
    )
    cached_audio, _ = _gemini_modality_tokens(
        obj, _GEMINI_DETAIL_FIELDS["cache"], "AUDIO", prefix, reader
    )
    output_audio, candidates_details_path = _gemini_modality_tokens(
        obj, _GEMINI_DETAIL_FIELDS["candidates"], "AUDIO", prefix, reader
    )

    # promptTokenCount includes cached content; tool-use prompt tokens are billed as input.
    parsed.set_sum("input_tokens", [counts["prompt"], counts["tool_use"]], paths["prompt"])
    parsed.set_sum("cached_input_tokens", [counts["cached"]], paths["cached"])
    # Thinking tokens are billed at the output rate but reported outside candidatesTokenCount.
    parsed.set_sum("output_tokens", [counts["candidates"], counts["thoughts"]], paths["candidates"])
    # Audio that was served from the cache is already in cached_input_tokens; the meters are
    # disjoint subsets, so only uncached audio goes to input_audio_tokens.
    uncached_audio: int | None = None
    if prompt_audio is not None and cached_audio is not None:
        uncached_audio = max(prompt_audio - cached_audio, 0)
    parsed.set_sum("input_audio_tokens", [uncached_audio], prompt_details_path)
    parsed.set_sum("output_audio_tokens", [output_audio], candidates_details_path)
    return parsed


def _detect(raw: Mapping[str, Any], reader: _Reader) -> tuple[str, Mapping[str, Any], str] | None:
    """Return (shape name, object to parse, path prefix), or None after recording an error."""
    keys = set(raw)
    wrappers = [w for w in _GEMINI_WRAPPERS if w in keys]
    shapes: list[str] = []
    if keys & _GEMINI_MARKERS:
        shapes.append("Google Gemini")
    if keys & _CHAT_MARKERS:
        shapes.append("OpenAI Chat Completions")
    if keys & _RESPONSES_MARKERS and keys & _RESPONSES_REQUIRES:
        shapes.append("OpenAI Responses")
    if keys & _ANTHROPIC_MARKERS:
        shapes.append("Anthropic")

    if wrappers:
        if len(wrappers) > 1 or shapes:
            reader.error(
                OBJECT_KEY,
                "Ambiguous usage object: send usageMetadata alone or the usage fields alone.",
            )
            return None
        wrapper = wrappers[0]
        inner = raw[wrapper]
        if not isinstance(inner, Mapping):
            reader.error(wrapper, "Must be a JSON object.")
            return None
        if not inner:
            reader.error(wrapper, "Must not be empty.")
            return None
        return "Google Gemini", inner, f"{wrapper}."

    if len(shapes) > 1:
        reader.error(
            OBJECT_KEY, f"Ambiguous usage object: it looks like both {' and '.join(shapes)}."
        )
        return None
    if not shapes:
        return "plain", raw, ""
    return shapes[0], raw, ""


def _check_mixing(
    shape: str, raw: Mapping[str, Any], obj: Mapping[str, Any], prefix: str, reader: _Reader
) -> None:
    """Reject plain meter names that the provider shape does not define."""
    native = _NATIVE_METERS[shape]
    stray = [("", key) for key in raw if key in METERS and key not in native]
    if obj is not raw:
        stray += [(prefix, key) for key in obj if key in METERS and key not in native]
    for key_prefix, key in stray:
        reader.error(
            f"{key_prefix}{key}",
            f"Cannot be combined with {shape} usage fields; send either plain meters or the "
            "provider's usage object.",
        )


def _check_totals(parsed: _Parsed, reader: _Reader) -> None:
    """Cross-field checks: subsets within totals, normalised sums within the cap."""
    meters, tainted, src = parsed.meters, parsed.tainted, parsed.src
    for meter in COUNT_METERS:
        # Only sums can exceed the cap here (single fields were checked individually).
        if meter not in tainted and meters[meter] > MAX_COUNT:
            reader.error(src[meter], f"Normalised {meter} ({meters[meter]}) exceeds {MAX_COUNT}.")
            tainted.add(meter)

    for parent, subsets in (("input_tokens", INPUT_SUBSETS), ("output_tokens", OUTPUT_SUBSETS)):
        if parent in tainted or any(s in tainted for s in subsets):
            continue
        present = [s for s in subsets if meters[s] > 0]
        subtotal = sum(int(meters[s]) for s in present)
        if subtotal <= meters[parent]:
            continue
        if len(present) == 1:
            reader.error(
                src[present[0]],
                f"Cannot exceed {src[parent]} ({meters[parent]}); it is a subset of it.",
            )
        else:
            names = " + ".join(src[s] for s in present)
            for subset in present:
                reader.error(
                    src[subset],
                    f"{names} ({subtotal}) cannot exceed {src[parent]} ({meters[parent]}).",
                )


_PLAIN_COUNT_KEYS = frozenset(COUNT_METERS)


def _plain_counts(raw: Mapping[str, Any]) -> dict[str, int | Decimal] | None:
    """The common case, answered without the general reader: plain count meters
    only, each a valid count, subsets within their totals. None for anything
    else (the general path then validates it and reports every problem)."""
    if not raw.keys() <= _PLAIN_COUNT_KEYS:
        return None
    for value in raw.values():
        if type(value) is not int or not 0 <= value <= MAX_COUNT:
            return None
    meters: dict[str, int | Decimal] = {
        m: (Decimal(0) if m == "audio_seconds" else raw.get(m, 0)) for m in METERS
    }
    if sum(meters[s] for s in INPUT_SUBSETS) > meters["input_tokens"]:
        return None
    if sum(meters[s] for s in OUTPUT_SUBSETS) > meters["output_tokens"]:
        return None
    return meters


def normalize_usage(raw: Mapping[str, Any]) -> dict[str, int | Decimal]:
    """Validate ``raw`` and return all ten meters in contract order.

    ``raw`` is plain meters or a provider usage object (see the module docstring). Absent meters
    are 0; ``audio_seconds`` is always a ``Decimal``; every other value is an ``int``.

    Raises :class:`UsageError` carrying every problem found (paths relative to the usage object,
    :data:`OBJECT_KEY` for the object itself).
    """
    if not isinstance(raw, Mapping):
        raise UsageError({OBJECT_KEY: "Must be a JSON object."})
    if not raw:
        raise UsageError({OBJECT_KEY: "Must not be empty: send at least one meter."})
    if (plain := _plain_counts(raw)) is not None:
        return plain

    reader = _Reader()
    detected = _detect(raw, reader)
    if detected is None:
        raise UsageError(reader.errors)
    shape, obj, prefix = detected

    if shape == "plain":
        parsed = _parse_plain(obj, reader)
    else:
        _check_mixing(shape, raw, obj, prefix, reader)
        if shape == "Google Gemini":
            parsed = _parse_gemini(obj, prefix, reader)
        elif shape == "OpenAI Chat Completions":
            parsed = _parse_openai_chat(obj, reader)
        elif shape == "OpenAI Responses":
            parsed = _parse_openai_responses(obj, reader)
        else:
            parsed = _parse_anthropic(obj, reader)

    _check_totals(parsed, reader)
    if reader.errors:
        raise UsageError(reader.errors)
    return dict(parsed.meters)

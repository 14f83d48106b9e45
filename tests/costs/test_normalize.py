"""Tests for the usage normaliser (pure: no Django, no DB)."""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

import pytest

from costs.pricing.engine import METERS, Rates, price_usage
from costs.pricing.normalize import (
    MAX_AUDIO_SECONDS,
    MAX_COUNT,
    OBJECT_KEY,
    UsageError,
    normalize_usage,
)


def _meters(**values: int | Decimal) -> dict[str, int | Decimal]:
    """All ten meters at zero, overridden by ``values``."""
    result: dict[str, int | Decimal] = {m: 0 for m in METERS}
    result["audio_seconds"] = Decimal(0)
    result.update(values)
    return result


def _errors(raw: Any) -> dict[str, str]:
    with pytest.raises(UsageError) as excinfo:
        normalize_usage(raw)
    return excinfo.value.errors


# --- plain meters ---------------------------------------------------------------------------


def test_plain_meters_fill_all_ten_meters_in_contract_order() -> None:
    result = normalize_usage({"input_tokens": 1_500, "output_tokens": 2_000})
    assert result == _meters(input_tokens=1_500, output_tokens=2_000)
    assert list(result) == list(METERS)
    assert type(result["audio_seconds"]) is Decimal
    assert all(type(result[m]) is int for m in METERS if m != "audio_seconds")


def test_plain_meters_accept_every_meter() -> None:
    raw = {
        "input_tokens": 100,
        "output_tokens": 50,
        "cached_input_tokens": 10,
        "cache_write_tokens": 20,
        "input_audio_tokens": 30,
        "output_audio_tokens": 40,
        "characters": 5_000,
        "images": 2,
        "audio_seconds": "330.5",
        "requests": 1,
    }
    expected = dict(raw, audio_seconds=Decimal("330.5"))
    assert normalize_usage(raw) == expected


def test_zero_valued_plain_usage_is_valid() -> None:
    assert normalize_usage({"requests": 0}) == _meters()


def test_audio_seconds_accepts_int_decimal_and_decimal_string() -> None:
    assert normalize_usage({"audio_seconds": 330})["audio_seconds"] == Decimal(330)
    assert normalize_usage({"audio_seconds": Decimal("330.5")})["audio_seconds"] == Decimal("330.5")
    assert normalize_usage({"audio_seconds": "0.000001"})["audio_seconds"] == Decimal("0.000001")
    # Trailing zeros past 6 dp carry no precision, so they are accepted and trimmed.
    trimmed = normalize_usage({"audio_seconds": "1.50000000"})["audio_seconds"]
    assert trimmed == Decimal("1.5")
    assert trimmed.as_tuple().exponent == -6
    assert str(normalize_usage({"audio_seconds": Decimal("1E+3")})["audio_seconds"]) == "1000"
    assert str(normalize_usage({"audio_seconds": "-0"})["audio_seconds"]) == "0"


def test_audio_seconds_upper_bound_is_inclusive() -> None:
    assert normalize_usage({"audio_seconds": MAX_AUDIO_SECONDS})["audio_seconds"] == Decimal(10**11)


def test_count_upper_bound_is_inclusive() -> None:
    assert normalize_usage({"characters": MAX_COUNT})["characters"] == 10**12


# --- OpenAI Chat Completions ----------------------------------------------------------------


def test_openai_chat_usage_with_details() -> None:
    raw = {
        "prompt_tokens": 1_500,
        "completion_tokens": 700,
        "total_tokens": 2_200,
        "prompt_tokens_details": {"cached_tokens": 1_000, "audio_tokens": 200},
        "completion_tokens_details": {
            "reasoning_tokens": 400,  # already inside completion_tokens
            "audio_tokens": 100,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=1_500,
        cached_input_tokens=1_000,
        input_audio_tokens=200,
        output_tokens=700,
        output_audio_tokens=100,
    )


def test_openai_chat_usage_tolerates_null_details_and_unknown_keys() -> None:
    # SDK model_dump() emits None for absent detail objects; providers add fields over time.
    raw = {
        "prompt_tokens": 10,
        "completion_tokens": 5,
        "total_tokens": 15,
        "prompt_tokens_details": None,
        "completion_tokens_details": {"reasoning_tokens": None, "future_field": 3},
        "some_new_field": {"x": 1},
    }
    assert normalize_usage(raw) == _meters(input_tokens=10, output_tokens=5)


def test_openai_chat_cached_response_priced_end_to_end() -> None:
    # gpt-4o: $2.50/M input, $1.25/M cached, $10/M output.
    # 500 uncached * 2.5e-6 = 0.00125 ; 1,000 cached * 1.25e-6 = 0.00125 ; 300 out * 1e-5 = 0.003
    # total = 0.0055
    usage = normalize_usage(
        {
            "prompt_tokens": 1_500,
            "completion_tokens": 300,
            "total_tokens": 1_800,
            "prompt_tokens_details": {"cached_tokens": 1_000, "audio_tokens": 0},
        }
    )
    rates = Rates(
        rates={
            "input_tokens": Decimal("0.0000025"),
            "cached_input_tokens": Decimal("0.00000125"),
            "output_tokens": Decimal("0.00001"),
        }
    )
    assert price_usage(rates, usage).total == Decimal("0.005500000000")


# --- OpenAI Responses -------------------------------------------------------------------------


def test_openai_responses_usage() -> None:
    raw = {
        "input_tokens": 1_500,
        "input_tokens_details": {"cached_tokens": 1_000},
        "output_tokens": 900,
        "output_tokens_details": {"reasoning_tokens": 600},
        "total_tokens": 2_400,
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=1_500, cached_input_tokens=1_000, output_tokens=900
    )


def test_openai_responses_recognised_by_total_tokens_alone() -> None:
    raw = {"input_tokens": 10, "output_tokens": 4, "total_tokens": 14}
    assert normalize_usage(raw) == _meters(input_tokens=10, output_tokens=4)


# --- Anthropic --------------------------------------------------------------------------------


def test_anthropic_usage_adds_cache_read_and_creation_to_input() -> None:
    # Anthropic input_tokens (50) excludes cache: total input = 50 + 2,000 + 300 = 2,350.
    raw = {
        "input_tokens": 50,
        "cache_creation_input_tokens": 300,
        "cache_read_input_tokens": 2_000,
        "cache_creation": {"ephemeral_5m_input_tokens": 300, "ephemeral_1h_input_tokens": 0},
        "output_tokens": 400,
        "server_tool_use": {"web_search_requests": 0},
        "service_tier": "standard",
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=2_350,
        cached_input_tokens=2_000,
        cache_write_tokens=300,
        output_tokens=400,
    )


def test_anthropic_usage_priced_end_to_end() -> None:
    # Claude Sonnet 4: $3/M input, $0.30/M cache read, $3.75/M cache write (5m), $15/M output.
    # uncached   50 * 3e-6    = 0.00015
    # read    2,000 * 0.3e-6  = 0.0006
    # write     300 * 3.75e-6 = 0.001125
    # output    400 * 15e-6   = 0.006
    # total                   = 0.007875
    usage = normalize_usage(
        {
            "input_tokens": 50,
            "cache_creation_input_tokens": 300,
            "cache_read_input_tokens": 2_000,
            "output_tokens": 400,
        }
    )
    rates = Rates(
        rates={
            "input_tokens": Decimal("0.000003"),
            "cached_input_tokens": Decimal("0.0000003"),
            "cache_write_tokens": Decimal("0.00000375"),
            "output_tokens": Decimal("0.000015"),
        }
    )
    result = price_usage(rates, usage)
    assert result.lines["input_tokens"] == Decimal("0.00015")
    assert result.total == Decimal("0.007875")


def test_anthropic_usage_with_null_cache_fields() -> None:
    raw = {
        "input_tokens": 7,
        "output_tokens": 3,
        "cache_creation_input_tokens": None,
        "cache_read_input_tokens": None,
    }
    assert normalize_usage(raw) == _meters(input_tokens=7, output_tokens=3)


# --- Google Gemini ----------------------------------------------------------------------------


def test_gemini_usage_metadata_bills_thoughts_as_output() -> None:
    raw = {
        "promptTokenCount": 12_000,
        "cachedContentTokenCount": 8_000,
        "candidatesTokenCount": 500,
        "thoughtsTokenCount": 1_200,
        "toolUsePromptTokenCount": 300,
        "totalTokenCount": 14_000,
        "promptTokensDetails": [
            {"modality": "TEXT", "tokenCount": 11_000},
            {"modality": "AUDIO", "tokenCount": 1_000},
        ],
        "candidatesTokensDetails": [{"modality": "TEXT", "tokenCount": 500}],
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=12_300,  # prompt 12,000 + tool-use prompt 300
        cached_input_tokens=8_000,
        input_audio_tokens=1_000,
        output_tokens=1_700,  # candidates 500 + thoughts 1,200
    )


def test_gemini_wrapped_usage_metadata_in_full_response() -> None:
    raw = {
        "candidates": [{"content": {"parts": [{"text": "hi"}]}}],
        "modelVersion": "gemini-2.5-pro",
        "usageMetadata": {"promptTokenCount": 250_000, "candidatesTokenCount": 1_000},
    }
    assert normalize_usage(raw) == _meters(input_tokens=250_000, output_tokens=1_000)


def test_gemini_snake_case_variant() -> None:
    raw = {
        "usage_metadata": {
            "prompt_token_count": 100,
            "candidates_token_count": 20,
            "thoughts_token_count": 5,
            "cached_content_token_count": 40,
            "prompt_tokens_details": [{"modality": "AUDIO", "token_count": 60}],
        }
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=100, cached_input_tokens=40, input_audio_tokens=60, output_tokens=25
    )


def test_gemini_cached_audio_is_not_counted_twice() -> None:
    # 1,000 audio prompt tokens, all served from cache: they are cached_input_tokens only.
    raw = {
        "promptTokenCount": 1_000,
        "cachedContentTokenCount": 1_000,
        "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 1_000}],
        "cacheTokensDetails": [{"modality": "AUDIO", "tokenCount": 1_000}],
    }
    assert normalize_usage(raw) == _meters(input_tokens=1_000, cached_input_tokens=1_000)


def test_gemini_audio_output_goes_to_output_audio_tokens() -> None:
    raw = {
        "promptTokenCount": 10,
        "candidatesTokenCount": 800,
        "candidatesTokensDetails": [{"modality": "AUDIO", "tokenCount": 800}],
    }
    assert normalize_usage(raw) == _meters(
        input_tokens=10, output_tokens=800, output_audio_tokens=800
    )


def test_gemini_25_pro_long_prompt_priced_at_tier_end_to_end() -> None:
    # 250,000 in > 200k -> $2.50/M: 0.625 ; 1,000 out at $15/M: 0.015 ; total 0.64
    from costs.pricing.engine import Tier

    rates = Rates(
        rates={"input_tokens": Decimal("0.00000125"), "output_tokens": Decimal("0.00001")},
        tiers=(
            Tier(
                threshold=200_000,
                rates={"input_tokens": Decimal("0.0000025"), "output_tokens": Decimal("0.000015")},
            ),
        ),
    )
    usage = normalize_usage(
        {"usageMetadata": {"promptTokenCount": 250_000, "candidatesTokenCount": 1_000}}
    )
    assert price_usage(rates, usage).total == Decimal("0.64")


# --- validation: counts -----------------------------------------------------------------------


def test_negative_count_is_rejected() -> None:
    assert _errors({"input_tokens": -1}) == {"input_tokens": "Must be a non-negative integer."}


def test_non_integer_count_is_rejected() -> None:
    assert "input_tokens" in _errors({"input_tokens": Decimal("1.5")})
    assert "input_tokens" in _errors({"input_tokens": None})
    assert "input_tokens" in _errors({"input_tokens": [1]})


def test_float_count_is_rejected_even_when_whole() -> None:
    assert _errors({"output_tokens": 1.0}) == {"output_tokens": "Must be a non-negative integer."}
    assert "output_tokens" in _errors({"output_tokens": 2.5})


def test_bool_count_is_rejected() -> None:
    assert "boolean" in _errors({"images": True})["images"]
    assert "boolean" in _errors({"prompt_tokens": False, "completion_tokens": 1})["prompt_tokens"]


def test_numeric_string_count_is_rejected() -> None:
    assert "string" in _errors({"characters": "5000"})["characters"]


def test_infinite_and_nan_counts_are_rejected() -> None:
    # What Python's json module produces for the non-standard literals.
    assert "input_tokens" in _errors(json.loads('{"input_tokens": Infinity}'))
    assert "input_tokens" in _errors({"input_tokens": math.nan})
    assert "input_tokens" in _errors({"input_tokens": Decimal("Infinity")})


def test_huge_count_is_rejected() -> None:
    assert _errors({"input_tokens": MAX_COUNT + 1}) == {
        "input_tokens": "Must be at most 1000000000000."
    }
    assert "requests" in _errors({"requests": 10**100})


def test_normalised_sum_above_cap_is_rejected() -> None:
    # Each Anthropic field is within the cap, but their sum (our total input) is not.
    errors = _errors(
        {
            "input_tokens": MAX_COUNT,
            "cache_read_input_tokens": 1,
            "output_tokens": 0,
        }
    )
    assert "input_tokens" in errors


# --- validation: audio_seconds --------------------------------------------------------------


def test_audio_seconds_float_is_rejected_with_decimal_string_hint() -> None:
    message = _errors({"audio_seconds": 330.5})["audio_seconds"]
    assert "decimal string" in message
    assert "audio_seconds" in _errors({"audio_seconds": 330.0})


def test_audio_seconds_nan_and_infinity_are_rejected() -> None:
    for bad in ("NaN", "nan", "Infinity", "-Infinity", "inf", "sNaN"):
        assert "audio_seconds" in _errors({"audio_seconds": bad}), bad
    for bad_decimal in (Decimal("NaN"), Decimal("sNaN"), Decimal("Infinity")):
        assert _errors({"audio_seconds": bad_decimal}) == {
            "audio_seconds": "Must be a finite number."
        }
    assert "audio_seconds" in _errors(json.loads('{"audio_seconds": NaN}'))


def test_audio_seconds_malformed_strings_are_rejected() -> None:
    for bad in ("", " 1", "1 ", "1e3", "1_000", "+1", "1.", ".5", "0x10", "1,5", "1" * 100):
        assert "audio_seconds" in _errors({"audio_seconds": bad}), bad


def test_audio_seconds_negative_is_rejected() -> None:
    assert _errors({"audio_seconds": "-0.5"}) == {"audio_seconds": "Must be non-negative."}
    assert "audio_seconds" in _errors({"audio_seconds": -1})
    assert "audio_seconds" in _errors({"audio_seconds": Decimal("-2")})


def test_audio_seconds_too_large_or_too_precise_is_rejected() -> None:
    assert "at most" in _errors({"audio_seconds": MAX_AUDIO_SECONDS + 1})["audio_seconds"]
    assert "decimal places" in _errors({"audio_seconds": "1.0000001"})["audio_seconds"]
    assert "decimal places" in _errors({"audio_seconds": Decimal("0.0000005")})["audio_seconds"]


def test_audio_seconds_bool_and_other_types_are_rejected() -> None:
    assert "audio_seconds" in _errors({"audio_seconds": True})
    assert "audio_seconds" in _errors({"audio_seconds": None})
    assert "audio_seconds" in _errors({"audio_seconds": {"value": 1}})


# --- validation: structure ------------------------------------------------------------------


def test_unknown_plain_key_is_rejected_and_listed() -> None:
    errors = _errors({"input_tokens": 5, "tokens": 3, "input_token": 1})
    assert list(errors) == [OBJECT_KEY]
    assert "input_token, tokens" in errors[OBJECT_KEY]


def test_empty_object_is_rejected() -> None:
    assert list(_errors({})) == [OBJECT_KEY]


def test_non_dict_is_rejected() -> None:
    for bad in ([], [("input_tokens", 1)], "input_tokens=1", 5, None):
        assert list(_errors(bad)) == [OBJECT_KEY], bad


def test_empty_or_non_object_usage_metadata_is_rejected() -> None:
    assert list(_errors({"usageMetadata": {}})) == ["usageMetadata"]
    assert list(_errors({"usageMetadata": [1]})) == ["usageMetadata"]


def test_subset_greater_than_total_is_reported_on_the_subset_field() -> None:
    assert list(_errors({"input_tokens": 10, "cached_input_tokens": 11})) == ["cached_input_tokens"]
    assert list(_errors({"output_tokens": 1, "output_audio_tokens": 2})) == ["output_audio_tokens"]
    # Missing total counts as 0.
    assert list(_errors({"cache_write_tokens": 1})) == ["cache_write_tokens"]


def test_subsets_that_only_exceed_together_are_all_reported() -> None:
    errors = _errors(
        {"input_tokens": 10, "cached_input_tokens": 6, "cache_write_tokens": 5, "images": 1}
    )
    assert set(errors) == {"cached_input_tokens", "cache_write_tokens"}
    assert "(11)" in errors["cached_input_tokens"]


def test_provider_subset_error_uses_provider_path() -> None:
    errors = _errors({"prompt_tokens": 10, "prompt_tokens_details": {"cached_tokens": 20}})
    assert list(errors) == ["prompt_tokens_details.cached_tokens"]
    assert "prompt_tokens" in errors["prompt_tokens_details.cached_tokens"]


def test_all_errors_are_collected_at_once() -> None:
    errors = _errors(
        {
            "input_tokens": -1,
            "output_tokens": 1.5,
            "images": True,
            "audio_seconds": 2.5,
            "characters": "10",
        }
    )
    assert set(errors) == {"input_tokens", "output_tokens", "images", "audio_seconds", "characters"}


def test_cross_field_check_skipped_when_total_itself_is_invalid() -> None:
    # input_tokens is invalid; complaining that cached exceeds it would be noise.
    assert list(_errors({"input_tokens": "100", "cached_input_tokens": 50})) == ["input_tokens"]


def test_nested_provider_paths_in_errors() -> None:
    errors = _errors(
        {
            "usageMetadata": {
                "promptTokenCount": -5,
                "promptTokensDetails": [{"modality": "AUDIO", "tokenCount": 1.5}, "x"],
            }
        }
    )
    assert set(errors) == {
        "usageMetadata.promptTokenCount",
        "usageMetadata.promptTokensDetails[0].tokenCount",
        "usageMetadata.promptTokensDetails[1]",
    }


def test_provider_detail_object_must_be_an_object() -> None:
    errors = _errors({"prompt_tokens": 1, "prompt_tokens_details": 5})
    assert list(errors) == ["prompt_tokens_details"]


def test_plain_meters_cannot_be_mixed_into_provider_objects() -> None:
    errors = _errors({"prompt_tokens": 10, "completion_tokens": 1, "images": 2})
    assert list(errors) == ["images"]
    errors = _errors({"usageMetadata": {"promptTokenCount": 1, "input_tokens": 5}})
    assert list(errors) == ["usageMetadata.input_tokens"]


def test_ambiguous_provider_shapes_are_rejected() -> None:
    # Both Anthropic cache fields and OpenAI Responses details.
    errors = _errors(
        {
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_read_input_tokens": 0,
            "input_tokens_details": {"cached_tokens": 0},
        }
    )
    assert list(errors) == [OBJECT_KEY]
    assert "Ambiguous" in errors[OBJECT_KEY]
    assert list(_errors({"prompt_tokens": 1, "promptTokenCount": 1})) == [OBJECT_KEY]
    assert list(_errors({"usageMetadata": {"promptTokenCount": 1}, "prompt_tokens": 1})) == [
        OBJECT_KEY
    ]


def test_gemini_camel_and_snake_duplicates_are_rejected() -> None:
    errors = _errors({"promptTokenCount": 1, "prompt_token_count": 1})
    assert list(errors) == ["prompt_token_count"]


def test_usage_error_is_a_value_error_and_prefixes_paths() -> None:
    with pytest.raises(ValueError) as excinfo:
        normalize_usage({"input_tokens": -1, "bogus": 1})
    error = excinfo.value
    assert isinstance(error, UsageError)
    assert error.with_prefix("usage") == {
        "usage": error.errors[OBJECT_KEY],
        "usage.input_tokens": "Must be a non-negative integer.",
    }
    assert "input_tokens" in str(error)

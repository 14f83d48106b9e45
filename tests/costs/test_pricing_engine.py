"""Tests for the pure pricing engine (no Django, no DB).

Expected costs are worked out by hand from published list prices (noted in comments), not
copied from the engine's output. Per-unit rate = published $ per N units / N.
"""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from costs.pricing.engine import (
    COUNT_METERS,
    METERS,
    CostBreakdown,
    Rates,
    Tier,
    price_usage,
    quantize_money,
)

PER_MILLION = Decimal(1_000_000)

# gpt-4o (OpenAI pricing page): $2.50 / 1M input, $1.25 / 1M cached input, $10.00 / 1M output.
GPT_4O = Rates(
    rates={
        "input_tokens": Decimal("2.50") / PER_MILLION,  # 0.0000025 per token
        "cached_input_tokens": Decimal("1.25") / PER_MILLION,  # 0.00000125 per token
        "output_tokens": Decimal("10.00") / PER_MILLION,  # 0.00001 per token
    }
)

# Gemini 2.5 Pro (ai.google.dev pricing): input $1.25/M for prompts <= 200k tokens, $2.50/M
# above; output $10/M <= 200k, $15/M above. Cliff tier: ALL tokens at the tier rate.
GEMINI_25_PRO = Rates(
    rates={
        "input_tokens": Decimal("0.00000125"),
        "output_tokens": Decimal("0.00001"),
    },
    tiers=(
        Tier(
            threshold=200_000,
            rates={"input_tokens": Decimal("0.0000025"), "output_tokens": Decimal("0.000015")},
        ),
    ),
)


def test_meters_are_the_contract_list_in_order() -> None:
    assert METERS == (
        "input_tokens",
        "output_tokens",
        "cached_input_tokens",
        "cache_write_tokens",
        "input_audio_tokens",
        "output_audio_tokens",
        "characters",
        "images",
        "audio_seconds",
        "requests",
    )
    assert len(COUNT_METERS) == 9
    assert "audio_seconds" not in COUNT_METERS
    assert set(COUNT_METERS) | {"audio_seconds"} == set(METERS)


def test_gpt_4o_text_request_costs_exactly_two_point_three_seven_five_cents() -> None:
    # 1,500 in  * $2.50/M  = $0.00375
    # 2,000 out * $10.00/M = $0.02
    # total                = $0.02375
    result = price_usage(GPT_4O, {"input_tokens": 1_500, "output_tokens": 2_000})
    assert result.total == Decimal("0.023750000000")
    assert str(result.total) == "0.023750000000"
    assert result.lines == {
        "input_tokens": Decimal("0.003750000000"),
        "output_tokens": Decimal("0.020000000000"),
    }
    assert result.tier is None
    assert result.unpriced_meters == ()


def test_gpt_4o_cached_prompt_tokens_are_billed_at_the_cached_rate() -> None:
    # OpenAI usage: prompt_tokens 1,500 of which cached_tokens 1,000; completion 300.
    # uncached    500 * $2.50/M  = $0.00125
    # cached    1,000 * $1.25/M  = $0.00125
    # output      300 * $10.00/M = $0.003
    # total                      = $0.0055
    result = price_usage(
        GPT_4O, {"input_tokens": 1_500, "cached_input_tokens": 1_000, "output_tokens": 300}
    )
    assert result.lines == {
        "input_tokens": Decimal("0.00125"),
        "output_tokens": Decimal("0.003"),
        "cached_input_tokens": Decimal("0.00125"),
    }
    assert result.total == Decimal("0.005500000000")


def test_fully_cached_prompt_has_no_uncached_input_line() -> None:
    # 1,000 in, all cached: 1,000 * $1.25/M = $0.00125, nothing at the $2.50 rate.
    result = price_usage(GPT_4O, {"input_tokens": 1_000, "cached_input_tokens": 1_000})
    assert result.lines == {"cached_input_tokens": Decimal("0.00125")}
    assert result.total == Decimal("0.00125")


def test_whisper_bills_per_second_from_per_minute_price() -> None:
    # whisper-1: $0.006 / minute = $0.0001 / second; 5.5 min = 330 s -> 330 * 0.0001 = $0.033
    whisper = Rates(rates={"audio_seconds": Decimal("0.006") / Decimal(60)})
    result = price_usage(whisper, {"audio_seconds": Decimal("330")})
    assert result.total == Decimal("0.033000000000")
    assert result.lines == {"audio_seconds": Decimal("0.033")}


def test_fractional_audio_seconds_are_priced_exactly() -> None:
    # 330.5 s * $0.0001/s = $0.03305
    whisper = Rates(rates={"audio_seconds": Decimal("0.0001")})
    assert price_usage(whisper, {"audio_seconds": Decimal("330.5")}).total == Decimal("0.03305")


def test_tts_1_hd_bills_characters() -> None:
    # tts-1-hd: $30 / 1M characters = $0.00003 / char; 5,000 chars -> $0.15
    tts = Rates(rates={"characters": Decimal("30") / PER_MILLION})
    result = price_usage(tts, {"characters": 5_000})
    assert result.total == Decimal("0.150000000000")


def test_images_and_requests_are_billed_at_their_own_rates() -> None:
    # dall-e-3 standard 1024x1024: $0.040 / image; 3 images = $0.12
    # plus a hypothetical $0.01 per request fee: 2 requests = $0.02 -> total $0.14
    rates = Rates(rates={"images": Decimal("0.040"), "requests": Decimal("0.01")})
    result = price_usage(rates, {"images": 3, "requests": 2})
    assert result.lines == {"images": Decimal("0.12"), "requests": Decimal("0.02")}
    assert result.total == Decimal("0.14")


def test_gemini_25_pro_above_threshold_bills_all_tokens_at_tier_rate() -> None:
    # 250,000 in > 200,000 -> tier: 250,000 * $2.50/M = $0.625 (not 200k at 1.25 + 50k at 2.50)
    #   1,000 out at tier        :   1,000 * $15/M   = $0.015
    # total                                           = $0.64
    result = price_usage(GEMINI_25_PRO, {"input_tokens": 250_000, "output_tokens": 1_000})
    assert result.tier == 200_000
    assert result.lines == {"input_tokens": Decimal("0.625"), "output_tokens": Decimal("0.015")}
    assert result.total == Decimal("0.640000000000")


def test_gemini_25_pro_exactly_at_threshold_bills_base_rate() -> None:
    # genai-prices rule: tier applies only when input_tokens > threshold (strict).
    # 200,000 in * $1.25/M = $0.25 ; 1,000 out * $10/M = $0.01 ; total $0.26
    result = price_usage(GEMINI_25_PRO, {"input_tokens": 200_000, "output_tokens": 1_000})
    assert result.tier is None
    assert result.total == Decimal("0.260000000000")


def test_gemini_25_pro_one_token_over_threshold_bills_tier_rate() -> None:
    # 200,001 in * $2.50/M = $0.5000025 ; 1,000 out * $15/M = $0.015 ; total $0.5150025
    result = price_usage(GEMINI_25_PRO, {"input_tokens": 200_001, "output_tokens": 1_000})
    assert result.tier == 200_000
    assert result.total == Decimal("0.515002500000")


def test_tier_is_chosen_by_total_input_including_cached_tokens() -> None:
    # 150,000 uncached + 60,000 cached = 210,000 total input > 200,000 -> tier.
    # No cached rate, so cached falls back to the TIER input rate ($2.50/M):
    # 210,000 * $2.50/M = $0.525
    result = price_usage(GEMINI_25_PRO, {"input_tokens": 210_000, "cached_input_tokens": 60_000})
    assert result.tier == 200_000
    assert result.lines == {
        "input_tokens": Decimal("0.375"),  # 150,000 * 0.0000025
        "cached_input_tokens": Decimal("0.15"),  # 60,000 * 0.0000025
    }
    assert result.total == Decimal("0.525")


def test_highest_applicable_tier_wins_and_unlisted_meters_keep_base_rate() -> None:
    rates = Rates(
        rates={"input_tokens": Decimal("0.001"), "output_tokens": Decimal("0.01")},
        # Given out of order on purpose: Rates sorts by threshold.
        tiers=(
            Tier(threshold=1_000, rates={"input_tokens": Decimal("0.003")}),
            Tier(threshold=100, rates={"input_tokens": Decimal("0.002")}),
        ),
    )
    # 1,001 in > 1,000 -> top tier $0.003: 1,001 * 0.003 = 3.003 ; output keeps base: 1 * 0.01
    result = price_usage(rates, {"input_tokens": 1_001, "output_tokens": 1})
    assert result.tier == 1_000
    assert result.lines == {"input_tokens": Decimal("3.003"), "output_tokens": Decimal("0.01")}
    # 101 in > 100 but not > 1,000 -> middle tier: 101 * 0.002 = 0.202
    assert price_usage(rates, {"input_tokens": 101}).total == Decimal("0.202")
    # 100 in is not > 100 -> base: 100 * 0.001 = 0.1
    assert price_usage(rates, {"input_tokens": 100}).tier is None


def test_cached_tokens_fall_back_to_input_rate_when_model_has_no_cache_price() -> None:
    # Model with only input $2/M and output $8/M: 1,000 cached of 1,500 in still cost $2/M.
    # 500 * 0.000002 = 0.001 ; 1,000 * 0.000002 = 0.002 ; total 0.003 (= 1,500 * $2/M)
    rates = Rates(rates={"input_tokens": Decimal("0.000002"), "output_tokens": Decimal("0.000008")})
    result = price_usage(rates, {"input_tokens": 1_500, "cached_input_tokens": 1_000})
    assert result.lines == {
        "input_tokens": Decimal("0.001"),
        "cached_input_tokens": Decimal("0.002"),
    }
    assert result.total == Decimal("0.003")
    assert result.unpriced_meters == ()


def test_explicit_none_subset_rate_also_falls_back_to_parent_rate() -> None:
    rates = Rates(
        rates={
            "input_tokens": Decimal("0.000002"),
            "cache_write_tokens": None,
            "output_tokens": Decimal("0.000008"),
            "output_audio_tokens": None,
        }
    )
    # 100 cache writes at input $2/M = 0.0002 ; 50 audio out of 100 out at output $8/M = 0.0004
    # 50 text out at $8/M = 0.0004
    result = price_usage(
        rates,
        {
            "input_tokens": 100,
            "cache_write_tokens": 100,
            "output_tokens": 100,
            "output_audio_tokens": 50,
        },
    )
    assert result.lines == {
        "output_tokens": Decimal("0.0004"),
        "cache_write_tokens": Decimal("0.0002"),
        "output_audio_tokens": Decimal("0.0004"),
    }
    assert result.total == Decimal("0.001")


def test_audio_and_cache_write_subsets_use_their_own_rates() -> None:
    # gpt-4o-audio-preview style: text in $2.50/M, audio in $40/M, text out $10/M,
    # audio out $80/M; Anthropic-style cache write $3.75/M.
    rates = Rates(
        rates={
            "input_tokens": Decimal("0.0000025"),
            "input_audio_tokens": Decimal("0.00004"),
            "cache_write_tokens": Decimal("0.00000375"),
            "output_tokens": Decimal("0.00001"),
            "output_audio_tokens": Decimal("0.00008"),
        }
    )
    usage = {
        "input_tokens": 3_000,  # = 1,000 text + 1,000 audio + 1,000 cache write
        "input_audio_tokens": 1_000,
        "cache_write_tokens": 1_000,
        "output_tokens": 500,  # = 200 text + 300 audio
        "output_audio_tokens": 300,
    }
    # text in     1,000 * 0.0000025  = 0.0025
    # audio in    1,000 * 0.00004    = 0.04
    # cache write 1,000 * 0.00000375 = 0.00375
    # text out      200 * 0.00001    = 0.002
    # audio out     300 * 0.00008    = 0.024
    # total                          = 0.07225
    result = price_usage(rates, usage)
    assert result.lines == {
        "input_tokens": Decimal("0.0025"),
        "output_tokens": Decimal("0.002"),
        "cache_write_tokens": Decimal("0.00375"),
        "input_audio_tokens": Decimal("0.04"),
        "output_audio_tokens": Decimal("0.024"),
    }
    assert result.total == Decimal("0.07225")


def test_meter_without_rate_costs_zero_and_is_reported_unpriced() -> None:
    # gpt-4o has no image rate: the 2 images cost 0 and are flagged; tokens still priced.
    # 1,000 in * $2.50/M = $0.0025
    result = price_usage(GPT_4O, {"input_tokens": 1_000, "images": 2, "requests": 1})
    assert result.unpriced_meters == ("images", "requests")
    assert result.lines["images"] == Decimal("0E-12")
    assert result.lines["requests"] == Decimal(0)
    assert result.total == Decimal("0.0025")


def test_unpriced_subset_reported_when_parent_rate_is_also_missing() -> None:
    rates = Rates(rates={"output_tokens": Decimal("0.00001")})
    result = price_usage(rates, {"input_tokens": 10, "cached_input_tokens": 4})
    assert result.unpriced_meters == ("input_tokens", "cached_input_tokens")
    assert result.total == Decimal(0)


def test_missing_meters_count_as_zero_and_empty_usage_costs_nothing() -> None:
    result = price_usage(GPT_4O, {})
    assert result == CostBreakdown(total=Decimal("0E-12"), lines={}, tier=None, unpriced_meters=())
    assert result.total.as_tuple().exponent == -12


def test_zero_usage_meters_have_no_line() -> None:
    result = price_usage(GPT_4O, {"input_tokens": 10, "output_tokens": 0, "images": 0})
    assert list(result.lines) == ["input_tokens"]
    assert result.unpriced_meters == ()


def test_lines_are_quantized_half_even_and_sum_to_total() -> None:
    # rate 0.0000000000025 per unit: 1 unit = 2.5e-12 -> half-even rounds to 2e-12;
    # 3 units = 7.5e-12 -> 8e-12. Total is the sum of rounded lines: 1e-11, not round(1e-11).
    rates = Rates(
        rates={"input_tokens": Decimal("0.0000000000025"), "images": Decimal("0.0000000000025")}
    )
    result = price_usage(rates, {"input_tokens": 1, "images": 3})
    assert result.lines == {
        "input_tokens": Decimal("0.000000000002"),
        "images": Decimal("0.000000000008"),
    }
    assert result.total == Decimal("0.000000000010")
    assert result.total == sum(result.lines.values(), Decimal(0))


def test_every_returned_value_has_exactly_twelve_decimal_places() -> None:
    result = price_usage(GPT_4O, {"input_tokens": 3, "cached_input_tokens": 1, "output_tokens": 7})
    for value in [result.total, *result.lines.values()]:
        assert value.as_tuple().exponent == -12


@pytest.mark.parametrize(
    ("quantity", "rate_text", "exact_text"),
    [
        # 10**15 tokens at $2.50/M = 2,500,000,000 dollars exactly.
        (10**15, "0.0000025", "2500000000"),
        # 999,999,999,999,999 * 0.000000123456789 = 123456789 * (1 - 1e-15)
        #   = 123456789 - 0.000000123456789 = 123456788.999999876543211,
        # quantised half-even to 12 dp (the dropped digits 211 round down).
        (999_999_999_999_999, "0.000000123456789", "123456788.999999876543"),
        # 123,456,789,012,345 * 0.00000001 = 1234567.89012345
        (123_456_789_012_345, "0.00000001", "1234567.89012345"),
    ],
)
def test_big_quantities_times_rates_are_exact(
    quantity: int, rate_text: str, exact_text: str
) -> None:
    result = price_usage(Rates(rates={"characters": Decimal(rate_text)}), {"characters": quantity})
    assert result.total == Decimal(exact_text)


def test_big_products_match_integer_arithmetic() -> None:
    # Property-ish: quantity * (n / 10**k) must equal the integer product scaled by 10**-k,
    # before the 12 dp quantisation (all chosen rates have <= 12 decimals so nothing rounds).
    for quantity in (1, 7, 10**15, 10**15 - 1, 987_654_321_987_654):
        for numerator, scale in ((25, 7), (123_456_789, 12), (3, 12), (999_999, 9)):
            rate = Decimal(numerator).scaleb(-scale)
            expected = Decimal(quantity * numerator).scaleb(-scale)
            result = price_usage(Rates(rates={"requests": rate}), {"requests": quantity})
            assert result.total == expected


def test_huge_audio_seconds_with_six_decimals_stay_exact() -> None:
    # 10**12 - 0.000001 s * $0.0001/s = 99,999,999.9999999999 (no silent rounding)
    rates = Rates(rates={"audio_seconds": Decimal("0.0001")})
    result = price_usage(rates, {"audio_seconds": Decimal("999999999999.999999")})
    assert result.total == Decimal("99999999.9999999999")


def test_quantize_money_rounds_half_even_to_twelve_places() -> None:
    assert quantize_money(Decimal("0.0000000000005")) == Decimal("0")
    assert quantize_money(Decimal("0.0000000000015")) == Decimal("0.000000000002")
    assert quantize_money(Decimal("0.0000000000025")) == Decimal("0.000000000002")
    assert quantize_money(Decimal("0.00000000000251")) == Decimal("0.000000000003")
    assert str(quantize_money(Decimal("1"))) == "1.000000000000"


def test_quantize_money_rejects_non_decimal() -> None:
    with pytest.raises(TypeError):
        quantize_money(1)  # type: ignore[arg-type]


def test_float_quantity_is_refused() -> None:
    with pytest.raises(TypeError):
        price_usage(GPT_4O, {"input_tokens": 1.0})  # type: ignore[dict-item]


def test_bool_quantity_is_refused() -> None:
    with pytest.raises(TypeError):
        price_usage(GPT_4O, {"input_tokens": True})


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="non-negative"):
        price_usage(GPT_4O, {"output_tokens": -1})


def test_subsets_exceeding_total_are_refused_instead_of_negative_money() -> None:
    with pytest.raises(ValueError, match="exceeds input_tokens"):
        price_usage(GPT_4O, {"input_tokens": 10, "cached_input_tokens": 11})
    with pytest.raises(ValueError, match="exceeds output_tokens"):
        price_usage(GPT_4O, {"output_tokens": 1, "output_audio_tokens": 2})


def test_float_rate_is_refused() -> None:
    with pytest.raises(TypeError):
        Rates(rates={"input_tokens": 0.0000025})  # type: ignore[dict-item]


def test_negative_or_non_finite_rate_is_refused() -> None:
    with pytest.raises(ValueError):
        Rates(rates={"input_tokens": Decimal("-0.1")})
    with pytest.raises(ValueError):
        Rates(rates={"input_tokens": Decimal("NaN")})
    with pytest.raises(ValueError):
        Tier(threshold=10, rates={"input_tokens": Decimal("Infinity")})


def test_unknown_meter_in_rates_is_refused() -> None:
    with pytest.raises(ValueError, match="input_token"):
        Rates(rates={"input_token": Decimal("0.1")})
    with pytest.raises(ValueError, match="prompt_tokens"):
        Tier(threshold=10, rates={"prompt_tokens": Decimal("0.1")})


def test_bad_tiers_are_refused() -> None:
    with pytest.raises(ValueError):
        Tier(threshold=-1, rates={})
    with pytest.raises(ValueError):
        Tier(threshold=True, rates={})
    with pytest.raises(ValueError, match="Duplicate"):
        Rates(rates={}, tiers=(Tier(threshold=5, rates={}), Tier(threshold=5, rates={})))


def test_rates_are_copied_so_later_mutation_cannot_change_prices() -> None:
    source = {"input_tokens": Decimal("0.001")}
    rates = Rates(rates=source)
    source["input_tokens"] = Decimal("1")
    assert price_usage(rates, {"input_tokens": 1}).total == Decimal("0.001")
    with pytest.raises(TypeError):
        rates.rates["input_tokens"] = Decimal("1")  # type: ignore[index]


def test_ambient_decimal_context_does_not_affect_results() -> None:
    import decimal

    with decimal.localcontext() as ctx:
        ctx.prec = 3
        ctx.rounding = decimal.ROUND_DOWN
        result = price_usage(GPT_4O, {"input_tokens": 1_500, "output_tokens": 2_000})
    assert result.total == Decimal("0.02375")


def test_pricing_modules_never_use_binary_floats() -> None:
    pricing_dir = Path(__file__).resolve().parents[2] / "costs" / "pricing"
    for module in ("engine.py", "normalize.py"):
        source = (pricing_dir / module).read_text()
        assert not re.search(r"\bfloat\(", source), module
        assert not re.search(r"Decimal\(\s*[0-9]*\.[0-9]", source), module


def test_pricing_modules_do_not_import_django() -> None:
    pricing_dir = Path(__file__).resolve().parents[2] / "costs" / "pricing"
    for module in ("engine.py", "normalize.py"):
        source = (pricing_dir / module).read_text()
        assert not re.search(r"^\s*(from|import)\s+django", source, re.MULTILINE), module

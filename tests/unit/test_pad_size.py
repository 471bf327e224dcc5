"""Choosing the cost-scaled model's width (relay_ray/models/pad_size.py): the pure parts."""

from __future__ import annotations

import pytest

from relay_ray.models.pad import SCALED_SPEC
from relay_ray.models.pad_size import (DEFAULT_EXPONENT, MAX_WIDTH, MIN_WIDTH, WIDTH_STEP, bracket_exponent,
                                       fitted_exponent, next_width, off_target_warning, spec_for_width)


def test_a_ratio_on_target_keeps_the_width():
    assert next_width(1280, 19.0, 19.0) == 1280


def test_too_cheap_widens_and_too_costly_narrows():
    # the bf16 CPU of docs/quality.md: 1024 gave 11.4x, so 19x needs a wider model
    wider = next_width(1024, 11.4, 19.0)
    assert 1024 < wider < 2048 and wider % WIDTH_STEP == 0
    narrower = next_width(2048, 27.4, 19.0)
    assert 1024 < narrower < 2048


def test_the_power_law_inverts_exactly_at_the_default_exponent():
    # excess (ratio - 1) proportional to width**e: from 1024 at ratio r, 2048 has 1 + (r-1)*2**e
    ratio_at_2048 = 1.0 + (13.0 - 1.0) * 2.0 ** DEFAULT_EXPONENT
    assert next_width(1024, 13.0, ratio_at_2048) == 2048


def test_widths_are_clamped():
    assert next_width(4096, 2.0, 1000.0) == MAX_WIDTH
    assert next_width(256, 1000.0, 1.5) == MIN_WIDTH


@pytest.mark.parametrize("ratio, target", [(1.0, 19.0), (19.0, 0.5)])
def test_ratios_at_or_below_one_are_rejected(ratio, target):
    with pytest.raises(ValueError, match="exceed 1"):
        next_width(1024, ratio, target)


def test_the_exponent_is_fitted_from_two_rounds_and_clamped():
    assert fitted_exponent((1024, 1.0 + 10.0), (2048, 1.0 + 40.0)) == pytest.approx(2.0)
    assert fitted_exponent((1024, 11.0), (2048, 11.0)) == 1.0  # noise: flat ratios clamp low
    assert fitted_exponent((1024, 11.0), (1024, 12.0)) == DEFAULT_EXPONENT  # one width: no fit


def test_spec_for_width_keeps_the_committed_shape():
    spec = spec_for_width(SCALED_SPEC.hidden_size)
    assert spec == SCALED_SPEC
    wider = spec_for_width(1536)
    assert (wider.intermediate_size, wider.extra_layers) == (3 * 1536, SCALED_SPEC.extra_layers)


def test_the_exponent_comes_from_the_rounds_that_bracket_the_target():
    rounds = [{"hidden_size": 1024, "ratio": 11.0}, {"hidden_size": 4096, "ratio": 200.0},
              {"hidden_size": 2048, "ratio": 41.0}]
    assert bracket_exponent(rounds, 19.0) == pytest.approx(2.0)  # 1024 and 2048, not 4096
    assert bracket_exponent(rounds[:1], 19.0) == DEFAULT_EXPONENT


def test_a_missed_target_says_which_width_to_start_from():
    # This session's first `make scaled-models`: a slow first small-tier timing sent round 2 to
    # 1792, and the kept round ended at 29.8x.
    rounds = [{"hidden_size": 1024, "ratio": 11.5}, {"hidden_size": 1792, "ratio": 33.3},
              {"hidden_size": 1664, "ratio": 29.8}]
    warning = off_target_warning(rounds, rounds[2], 19.0, 0.1)
    assert warning is not None and "29.8x" in warning and "3 rounds" in warning
    assert f"--start-width {next_width(1664, 29.8, 19.0)}" in warning and next_width(1664, 29.8, 19.0) < 1664
    assert off_target_warning(rounds, {"hidden_size": 1280, "ratio": 20.45}, 19.0, 0.1) is None

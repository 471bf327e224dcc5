"""Wilson intervals and the exact McNemar test (relay_ray/quality/stats.py) against known values."""

from __future__ import annotations

import pytest

from relay_ray.quality.stats import binomial_tail, mcnemar_exact, paired, wilson


def test_wilson_matches_published_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553 to 0.3662; 15/148 -> 0.0624 to 0.1605.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=5e-5)
    # At 0 and n the interval stays inside [0, 1] and is not degenerate.
    low, high = wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=5e-5)
    low, high = wilson(20, 20)
    assert high == 1.0 and low == pytest.approx(0.8389, abs=5e-5)
    assert wilson(0, 0) == (0.0, 1.0)


def test_wilson_narrows_with_n_and_rejects_bad_counts():
    assert (lambda a, b: a[1] - a[0] > b[1] - b[0])(wilson(46, 50), wilson(460, 500))
    with pytest.raises(ValueError):
        wilson(6, 5)


def test_wilson_contains_the_proportion_exactly_at_the_ends():
    # 0/200 gave a low end of 1.7e-18 before: a plot's error bar p - low was negative.
    for n in range(1, 600):
        for k in (0, 1, n - 1, n):
            low, high = wilson(k, n)
            assert low <= k / n <= high, (k, n, low, high)
        assert wilson(0, n)[0] == 0.0 and wilson(n, n)[1] == 1.0


def test_binomial_tail_is_exact():
    assert binomial_tail(0, 3) == pytest.approx(1 / 8)
    assert binomial_tail(1, 3) == pytest.approx(4 / 8)
    assert binomial_tail(5, 3) == 1


@pytest.mark.parametrize("b,c,expected", [
    (0, 0, 1.0),
    (5, 5, 1.0),
    (0, 5, 0.0625),  # 2 * (1/2)^5
    (1, 9, 0.021484375),  # 2 * (1 + 10) / 1024
    (10, 2, 158 / 4096),  # 2 * (1 + 12 + 66) / 4096
    (3, 1, 0.625),
])
def test_mcnemar_exact_two_sided(b, c, expected):
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)
    assert mcnemar_exact(c, b) == pytest.approx(expected, rel=1e-9)  # symmetric


def test_mcnemar_large_counts_stay_exact():
    # 60 vs 100 discordant items: far in the tail, but representable and below 0.01.
    p = mcnemar_exact(60, 100)
    assert 0 < p < 0.01
    assert mcnemar_exact(250, 250) == 1.0


def test_paired_counts_only_discordant_items():
    run = [True, True, False, False, True, True]
    ref = [True, False, True, False, False, False]
    result = paired(run, ref)
    assert (result.only_run, result.only_reference, result.difference) == (3, 1, 2)
    assert result.p_value == pytest.approx(0.625)
    with pytest.raises(ValueError, match="different items"):
        paired(run, ref[:-1])

import math

from relay_ray.engines.signals import normalized_entropy, top_margin


def test_full_distribution_gives_the_exact_entropy():
    probs = [0.5, 0.25, 0.125, 0.125]
    exact = -sum(p * math.log(p) for p in probs) / math.log(4)
    assert math.isclose(normalized_entropy([math.log(p) for p in probs], 4), exact)


def test_missing_tail_is_bounded_from_below_and_normalized():
    top = [math.log(0.6), math.log(0.2)]  # tail mass 0.2 at most as likely as 0.2
    h = normalized_entropy(top, 1000)
    head = -(0.6 * math.log(0.6) + 0.2 * math.log(0.2))
    assert math.isclose(h * math.log(1000), head + 0.2 * -math.log(0.2))
    assert 0.0 <= normalized_entropy([0.0], 1000) <= 1e-12  # a certain token


def test_margin():
    assert math.isclose(top_margin([math.log(0.7), math.log(0.2)]), 0.5)
    assert math.isclose(top_margin([math.log(0.7)]), 0.7)

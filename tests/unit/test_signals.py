import math
import random

from relay_ray.engines.signals import normalized_entropy, top_margin


def test_full_distribution_gives_the_exact_entropy():
    probs = [0.5, 0.25, 0.125, 0.125]
    exact = -sum(p * math.log(p) for p in probs) / math.log(4)
    assert math.isclose(normalized_entropy([math.log(p) for p in probs], 4), exact)


def _random_distribution(rng: random.Random, vocab_size: int) -> list[float]:
    """Probabilities over ``vocab_size`` tokens, sorted, from peaked to nearly flat."""
    sharpness = rng.choice([0.3, 1.0, 3.0, 8.0])
    weights = [rng.random() ** sharpness for _ in range(vocab_size)]
    total = sum(weights)
    return sorted((w / total for w in weights), reverse=True)


def _entropy(probs: list[float]) -> float:
    return -sum(p * math.log(p) for p in probs if p > 0.0)


def _estimate(probs: list[float], k: int, rng: random.Random) -> float:
    """The estimate from the top-k logprobs (in any order, as an engine may return them), in nats."""
    top = [math.log(p) for p in probs[:k]]
    rng.shuffle(top)
    return normalized_entropy(top, len(probs)) * math.log(len(probs))


def test_the_top_k_estimate_is_a_lower_bound_that_rises_with_k_to_the_true_entropy():
    rng = random.Random(7)
    for _ in range(200):
        vocab_size = rng.choice([8, 50, 1000])
        probs = _random_distribution(rng, vocab_size)
        true = _entropy(probs)
        estimates = [_estimate(probs, k, rng) for k in range(1, min(vocab_size, 24) + 1)]
        for k, est in enumerate(estimates, start=1):
            tail = 1.0 - sum(probs[:k])
            assert est <= true + 1e-9, (vocab_size, k)
            # ... and it misses at most what a flat tail capped at p_k could add.
            if tail > 1e-9:
                assert true - est <= tail * math.log((vocab_size - k) * probs[k - 1] / tail) + 1e-9
        assert all(a <= b + 1e-12 for a, b in zip(estimates, estimates[1:])), "not monotone in k"
        assert math.isclose(_estimate(probs, vocab_size, rng), true, rel_tol=1e-9, abs_tol=1e-12)


def test_the_estimate_is_exact_when_the_tail_is_flat_at_the_last_returned_probability():
    rng = random.Random(3)
    for _ in range(100):
        k, num_tail = rng.randint(1, 20), rng.randint(1, 500)
        head = sorted((rng.random() + 1.0 for _ in range(k)), reverse=True)  # every head p >= tail p
        tail_weight = min(head) * rng.uniform(0.2, 1.0)
        total = sum(head) + tail_weight * num_tail
        probs = [w / total for w in head] + [tail_weight / total] * num_tail
        exact = _entropy(probs) / math.log(len(probs))
        top_k_plus_one = [math.log(p) for p in probs[:k + 1]]  # p_{k+1} is the tail's level
        assert math.isclose(normalized_entropy(top_k_plus_one, len(probs)), exact, rel_tol=1e-9)


def test_a_certain_token_has_zero_entropy():
    assert 0.0 <= normalized_entropy([0.0], 1000) <= 1e-12


def test_margin():
    assert math.isclose(top_margin([math.log(0.7), math.log(0.2)]), 0.5)
    assert math.isclose(top_margin([math.log(0.7)]), 0.7)

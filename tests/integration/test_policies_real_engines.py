"""Each policy switches tiers when its rule says so, on the real demo pair."""

from __future__ import annotations

import pytest

from relay_ray.client import build_request
from relay_ray.v1 import common_pb2

pytestmark = pytest.mark.integration
LARGE, SMALL = common_pb2.TIER_LARGE, common_pb2.TIER_SMALL
ENTROPY, STOP_STRING = common_pb2.FINISH_REASON_ENTROPY, common_pb2.FINISH_REASON_STOP_STRING
PROMPT = "So we add 12 and 30, so the sum is 42. Therefore"


def _alone(client, policy: str, n: int = 48):
    return client.generate(build_request(PROMPT, policy, max_new_tokens=n))


def test_fixed_ratio_switches_at_its_lengths(pair_client):
    response = pair_client.generate(build_request(PROMPT, "fixed-ratio", {"large_tokens": 7, "small_tokens": 3},
                                                  max_new_tokens=40))
    segments = response.segments
    assert len(segments) >= 3
    for i, seg in enumerate(segments):
        assert seg.tier == (LARGE if i % 2 == 0 else SMALL)
        full = 7 if seg.tier == LARGE else 3
        if i < len(segments) - 1:
            assert (seg.num_tokens, seg.finish_reason) == (full, common_pb2.FINISH_REASON_LENGTH)
        else:  # the model may end the answer early
            assert seg.num_tokens == full or seg.finish_reason == common_pb2.FINISH_REASON_EOS


def test_relaygen_switches_on_a_cue_the_large_model_writes(pair_client):
    base = _alone(pair_client, "large-only")
    words = base.text.split()
    cue = next(w for w in words[4:] if w.isascii() and w.isalpha() and len(w) >= 2 and base.text.count(w) == 1)
    response = pair_client.generate(build_request(PROMPT, "relaygen", {"cues": [cue], "sentence_ends": ["."]},
                                                  max_new_tokens=48))
    first, second = response.segments[0], response.segments[1]
    assert (first.tier, first.finish_reason, first.matched_stop) == (LARGE, STOP_STRING, cue)
    assert first.text.endswith(cue) and base.text.startswith(first.text)  # the large model wrote as alone
    assert second.tier == SMALL


def test_rstitch_extremes_and_entropy_handoffs(pair_client):
    large_alone, small_alone = _alone(pair_client, "large-only"), _alone(pair_client, "small-only")
    at_one = pair_client.generate(build_request(PROMPT, "rstitch", {"tau": 1.0}, max_new_tokens=48))
    assert list(at_one.token_ids) == list(small_alone.token_ids) and at_one.stats.num_switches == 0
    at_zero = pair_client.generate(build_request(PROMPT, "rstitch", {"tau": 0.0}, max_new_tokens=48))
    first = at_zero.segments[0]
    assert (first.tier, first.num_tokens, first.num_dropped_tokens, first.finish_reason) == (SMALL, 0, 1, ENTROPY)
    assert list(at_zero.token_ids) == list(large_alone.token_ids)  # the large tier took over for good
    mixed = None
    for tau in (0.3, 0.32, 0.34, 0.36, 0.28, 0.38, 0.25, 0.4):
        response = pair_client.generate(build_request(PROMPT, "rstitch", {"tau": tau}, max_new_tokens=48))
        if response.stats.large_tokens and response.stats.small_tokens and response.stats.num_switches >= 2:
            mixed = response
            break
    assert mixed is not None, "no tau in the grid mixed both tiers"
    for seg in mixed.segments[:-1]:
        assert seg.finish_reason == ENTROPY
        assert seg.num_dropped_tokens == (1 if seg.tier == SMALL else 0)

"""The in-engine entropy rule (engines/entropy_stop.py): it fires exactly where the tier's own
rule would (the same entropy of the same top-k), forces the sentinel only there, changes
nothing elsewhere, and follows vLLM's batch updates. vLLM's sampler is not run here (the tier's
integration tests run it); its logits-processor interface is."""

from __future__ import annotations

import math
import random

import pytest
import torch
from vllm import SamplingParams
from vllm.v1.sample.logits_processor import BatchUpdate, MoveDirectionality

from relay_ray.engines.entropy_stop import (
    EXTRA_ARGS_KEY, EntropyStopProcessor, resolve_sentinel, stop_args, top_logprobs_rows,
)
from relay_ray.engines.signals import normalized_entropy

VOCAB, SENTINEL, EOS, TOP_K = 40, 1, 2, 20


def _params(threshold: float, min_prior: int = 0, greedy: bool = True) -> SamplingParams:
    return SamplingParams(max_tokens=8, temperature=0.0 if greedy else 1.0,
                          extra_args=stop_args(threshold, min_prior, SENTINEL, TOP_K, VOCAB, (EOS,), greedy))


def _processor(*rows: tuple[int, SamplingParams, list[int]]) -> EntropyStopProcessor:
    proc = EntropyStopProcessor(None, torch.device("cpu"), False)
    proc.update_state(BatchUpdate(batch_size=len(rows), removed=[], moved=[],
                                  added=[(i, p, None, out) for i, p, out in rows]))
    return proc


def _entropy(row: torch.Tensor) -> float:
    values, _ = top_logprobs_rows(row[None], TOP_K)
    return normalized_entropy(values[0], VOCAB)


def _forced(logits: torch.Tensor, index: int) -> bool:
    row = logits[index]
    return row[SENTINEL].item() == 0.0 and bool(torch.isinf(row).sum() == VOCAB - 1)


def test_it_fires_where_the_tiers_rule_fires_and_changes_nothing_elsewhere():
    rng = random.Random(0)
    fired = held = 0
    for _ in range(300):
        logits = torch.randn(1, VOCAB) * rng.choice([0.3, 1.0, 3.0, 10.0])
        logits[0, EOS] = -50.0  # the greedy-EOS exception is tested below
        threshold = rng.uniform(0.05, 0.95)
        expected = _entropy(logits[0]) > threshold
        # the tier's own rule, from what vLLM returns as logprobs (log-softmax of the raw logits)
        tier_view = normalized_entropy(torch.log_softmax(logits[0], -1).topk(TOP_K).values.tolist(), VOCAB)
        assert (tier_view > threshold) == expected
        out = _processor((0, _params(threshold), [])).apply(logits.clone())
        if expected:
            fired += 1
            assert _forced(out, 0)
        else:
            held += 1
            assert torch.equal(out, logits)  # untouched: the sentinel is not masked either
    assert fired > 50 and held > 50


def test_min_prior_tokens_read_the_requests_running_output_list():
    flat = torch.zeros(1, VOCAB)  # maximal entropy: fires whenever allowed
    output: list[int] = []
    proc = _processor((0, _params(0.5, min_prior=2), output))
    assert not _forced(proc.apply(flat.clone()), 0)
    output += [7, 8]  # vLLM appends to the list it handed over
    proc.update_state(None)
    assert _forced(proc.apply(flat.clone()), 0)


def test_a_greedy_eos_is_left_to_the_tiers_eos_rule():
    logits = torch.zeros(1, VOCAB)
    logits[0, EOS] = 0.5  # EOS on top of a near-flat distribution
    assert not _forced(_processor((0, _params(0.1), [])).apply(logits.clone()), 0)
    assert _forced(_processor((0, _params(0.1, greedy=False), [])).apply(logits.clone()), 0)


def test_rows_without_the_rule_are_untouched_and_batch_moves_are_followed():
    flat = torch.zeros(3, VOCAB)
    plain = SamplingParams(max_tokens=8)
    proc = _processor((0, plain, []), (1, _params(0.5), []), (2, plain, []))
    out = proc.apply(flat.clone())
    assert torch.equal(out[0], flat[0]) and torch.equal(out[2], flat[2]) and _forced(out, 1)
    # the rule's row moves to index 0, then a new row with the rule arrives at index 2
    proc.update_state(BatchUpdate(batch_size=3, removed=[], added=[],
                                  moved=[(1, 0, MoveDirectionality.SWAP)]))
    out = proc.apply(flat.clone())
    assert _forced(out, 0) and torch.equal(out[1], flat[1])
    proc.update_state(BatchUpdate(batch_size=3, removed=[0], added=[(2, _params(0.5), None, [])], moved=[]))
    out = proc.apply(flat.clone())
    assert torch.equal(out[0], flat[0]) and _forced(out, 2)
    proc.update_state(BatchUpdate(batch_size=3, removed=[2], added=[], moved=[]))
    assert torch.equal(proc.apply(flat.clone()), flat)


def test_parameters_are_checked_at_the_engine_boundary():
    EntropyStopProcessor.validate_params(SamplingParams())  # no rule: nothing to check
    EntropyStopProcessor.validate_params(_params(0.3))
    bad = SamplingParams(extra_args={EXTRA_ARGS_KEY: {**_params(0.3).extra_args[EXTRA_ARGS_KEY], "sentinel": VOCAB}})
    with pytest.raises(ValueError, match="sentinel"):
        EntropyStopProcessor.validate_params(bad)


class _Tokenizer:
    def __init__(self, bos, unk, vocab=()):
        self.bos_token_id, self.unk_token_id, self._vocab = bos, unk, dict(vocab)

    def convert_tokens_to_ids(self, tokens):
        return [self._vocab.get(t, self.unk_token_id) for t in tokens]


def test_the_sentinel_is_a_configured_token_else_bos_else_unk_never_eos():
    assert resolve_sentinel(_Tokenizer(1, 0), None, (2,)) == 1
    assert resolve_sentinel(_Tokenizer(None, 0), None, (2,)) == 0
    assert resolve_sentinel(_Tokenizer(2, None), None, (2,)) is None  # BOS is EOS: logprobs instead
    assert resolve_sentinel(_Tokenizer(None, None, {"<|fim_pad|>": 9}), "<|fim_pad|>", (2,)) == 9
    with pytest.raises(ValueError, match="not a token"):
        resolve_sentinel(_Tokenizer(None, 0), "<|nope|>", (2,))

"""Segment-by-segment decoding equals decoding the whole output, even when a segment ends
inside a multi-byte character."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from relay_ray.engines.detok import IncrementalDecoder

MODEL = Path(__file__).resolve().parents[2] / "models" / "demo-small"


@pytest.fixture(scope="module")
def tokenizer():
    if not (MODEL / "tokenizer.json").exists():
        pytest.fail("models are missing: run `make models` (make test builds them)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(MODEL))


def test_split_decoding_matches_whole_decoding(tokenizer):
    rng = random.Random(0)
    vocab = len(tokenizer)
    for _ in range(50):
        prompt = [rng.randrange(5, vocab) for _ in range(8)]
        output = [rng.randrange(5, vocab) for _ in range(60)]
        cuts = sorted(rng.sample(range(1, 60), 6))
        text, start = "", 0
        for end in cuts + [60]:
            decoder = IncrementalDecoder(tokenizer, prompt + output[:start])
            text += "".join(decoder.push(t) for t in output[start:end])
            start = end
        whole = IncrementalDecoder(tokenizer, prompt)
        assert text == "".join(whole.push(t) for t in output)

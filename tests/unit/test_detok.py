"""Segment-by-segment decoding equals decoding the whole output, even when a segment ends
inside a multi-byte character."""

from __future__ import annotations

import random

import pytest

from relay_ray.engines.detok import IncrementalDecoder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The demo models' byte-level BPE tokenizer, built afresh (no model needed)."""
    from transformers import AutoTokenizer

    from relay_ray.models.build import build_tokenizer

    path = tmp_path_factory.mktemp("tokenizer")
    build_tokenizer(path, 512)
    return AutoTokenizer.from_pretrained(str(path))


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

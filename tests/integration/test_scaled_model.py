"""The cost-scaled large model (arith-large zero-padded, relay_ray/models/pad.py) answers like
arith-large in vLLM as served: bfloat16 against arith-large's own fp32, greedy, dev prompts."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay_ray.models.pad import SPEC_FILE, pad_model, SCALED_SPEC
from relay_ray.models.pad_check import check
from relay_ray.quality.dataset import load_dataset

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "demo-models" / "arith-large"
SCALED = ROOT / "models" / "arith-large-scaled"
NUM_PROMPTS = 20


def test_scaled_model_gives_arith_large_greedy_answers():
    if not (SCALED / SPEC_FILE).is_file():  # `make scaled-models` builds it; so does this (seconds)
        pad_model(SOURCE, SCALED, SCALED_SPEC)
    items, _ = load_dataset(ROOT / "data" / "arith" / "dev.jsonl", NUM_PROMPTS)
    report = check(str(SOURCE), "float32", str(SCALED), "bfloat16", [i.prompt for i in items])
    assert report["num_prompts"] == NUM_PROMPTS
    assert report["identical_share"] >= 0.95, report
    assert report["same_answer"] >= 0.95 * NUM_PROMPTS, report

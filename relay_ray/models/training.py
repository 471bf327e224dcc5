"""The shared training pieces of the demo models: their shapes, construction, the training
loop and saving. Used by :mod:`relay_ray.models.train` (the large and small models) and
:mod:`relay_ray.models.caller` (the RelayLLM caller fine-tuned from the small one).
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from relay_ray.models.sequences import IGNORE, Example, collate

HEAD_DIM = 64  # vLLM's CPU attention needs >= 32; 64 is verified


class TrainSpec(BaseModel):
    """Shape and optimisation of one model. ``num_attention_heads * 64 == hidden_size``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    hidden_size: int = Field(..., ge=64)
    num_hidden_layers: int = Field(..., ge=1)
    intermediate_size: int = Field(..., ge=16)
    steps: int = Field(..., ge=1, description="optimizer steps")
    batch_size: int = Field(32, ge=1, description="sequences per step")
    peak_lr: float = Field(2e-3, gt=0)
    warmup_steps: int = Field(100, ge=0)
    seed: int = 0

    @property
    def num_attention_heads(self) -> int:
        return self.hidden_size // HEAD_DIM


# Same data; the large model has 26x the small one's parameters and trains longer. The small
# one is a single 64-wide attention head (vLLM's CPU backend needs head size 64) over two layers
# with a 128-wide MLP: it learns the easy spans (copies, cues, the answer section) early and the
# computed digits only partly (learning curves in docs/quality.md). Chosen by a sweep on the dev
# split (docs/quality.md): 128x2 with a 32-wide MLP reached 86% and was too close to the large.
LARGE = TrainSpec(name="arith-large", hidden_size=256, num_hidden_layers=4, intermediate_size=768,
                  steps=1200, seed=1)
SMALL = TrainSpec(name="arith-small", hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                  steps=1000, seed=2)


def new_model(spec: TrainSpec, vocab_size: int, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(spec.seed)
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers, num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads, head_dim=HEAD_DIM, max_position_embeddings=1024,
        initializer_range=0.02, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


def _lr_at(step: int, spec: TrainSpec) -> float:
    if step < spec.warmup_steps:
        return spec.peak_lr * (step + 1) / spec.warmup_steps
    progress = (step - spec.warmup_steps) / max(1, spec.steps - spec.warmup_steps)
    return spec.peak_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def fit(model, spec: TrainSpec, examples: list[Example], pad_id: int, log_every: int = 50,
        probe=None, probe_every: int = 0) -> dict:
    """Teacher-forced training of ``model`` on ``examples`` for ``spec.steps`` steps (bf16
    autocast, AdamW, warm-up then cosine). ``probe(model) -> str`` is printed every
    ``probe_every`` steps. Returns the last logged loss and the time taken."""
    import torch

    torch.manual_seed(spec.seed)
    order_rng = random.Random(spec.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.peak_lr, betas=(0.9, 0.95), weight_decay=0.1)
    order: list[int] = []
    started, tokens, running = time.perf_counter(), 0, []
    model.train()
    for step in range(spec.steps):
        if len(order) < spec.batch_size:
            fresh = list(range(len(examples)))
            order_rng.shuffle(fresh)
            order += fresh
        batch = [examples[i] for i in order[:spec.batch_size]]
        del order[:spec.batch_size]
        ids, mask, labels = collate(batch, pad_id)
        for group in opt.param_groups:
            group["lr"] = _lr_at(step, spec)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        loss = torch.nn.functional.cross_entropy(
            logits.float().reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(mask.sum())
        running.append(float(loss.detach()))
        if (step + 1) % log_every == 0 or step + 1 == spec.steps:
            elapsed = time.perf_counter() - started
            eta = elapsed / (step + 1) * (spec.steps - step - 1)
            print(f"[{spec.name}] step {step + 1}/{spec.steps} loss {sum(running) / len(running):.4f} "
                  f"lr {_lr_at(step, spec):.2e} {tokens / elapsed:.0f} tok/s "
                  f"elapsed {elapsed / 60:.1f} min eta {eta / 60:.1f} min", flush=True)
            last_loss, running = sum(running) / len(running), []
        if probe is not None and probe_every and (step + 1) % probe_every == 0:
            print(f"[{spec.name}] step {step + 1}: {probe(model)}", flush=True)
            model.train()
    return {"final_loss": round(last_loss, 5), "train_minutes": round((time.perf_counter() - started) / 60, 2)}


def save(model, tokenizer, out_dir: Path, report: dict) -> None:
    """bfloat16 safetensors + tokenizer + ``train-report.json``."""
    import torch

    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(torch.bfloat16).save_pretrained(str(out_dir), safe_serialization=True)
    model.to(torch.float32)  # keep evaluating what was saved (bf16-rounded weights)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / "train-report.json").write_text(json.dumps(report, indent=2) + "\n")

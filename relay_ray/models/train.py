"""Train the demo model pair (and the RelayLLM caller) on the arithmetic task, deterministically.

``python -m relay_ray.models.train --out demo-models`` (``make demo-models``) trains the large
and the small model by teacher forcing on generated traces, then the caller variant of the
small one (:mod:`relay_ray.models.caller`), and saves each as a Hugging Face folder (bfloat16
safetensors, shared tokenizer) with a ``train-report.json`` of what was measured. Seeded:
the same command on the same machine writes the same weights. ``--scale 0.1`` runs a short
trial. Budget: about 40 minutes on 2 CPU cores for the whole set.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from relay_ray.models.sequences import IGNORE, Example, collate, make_example
from relay_ray.models.vocab import build_task_tokenizer
from relay_ray.tasks.splits import eval_splits, train_problems

VOCAB_SIZE = 448  # the BPE saturates below this on the task's text (about 430 tokens)
HEAD_DIM = 64  # vLLM's CPU attention needs >= 32; 64 is verified
# The chat template's own words, added to the tokenizer corpus so they become single tokens.
CHAT_WORDS = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n<think>\n"


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
PROBE_EVERY = {"large": 200, "small": 100}


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


def measure(model, tokenizer, dev, num_dev: int) -> dict:
    """Greedy dev accuracy and teacher-forced span statistics (torch, no vLLM)."""
    from dataclasses import asdict

    from relay_ray.models.greedy import accuracy, span_stats

    started = time.perf_counter()
    acc = accuracy(model, tokenizer, dev[:num_dev])
    stats = {k: round(v, 4) for k, v in asdict(span_stats(model, tokenizer, dev[:100])).items()}
    print(f"  dev greedy accuracy {acc:.3f} on {num_dev} problems; {stats} "
          f"({time.perf_counter() - started:.0f} s)", flush=True)
    return {"dev_accuracy": acc, "dev_problems": num_dev, **stats}


def _probe(model, tokenizer, problems) -> str:
    from relay_ray.models.greedy import accuracy, span_stats

    s = span_stats(model, tokenizer, problems)
    return (f"dev greedy accuracy {accuracy(model, tokenizer, problems):.3f} ({len(problems)} problems); "
            f"teacher-forced token accuracy hard {s.hard_token_accuracy:.3f} easy {s.easy_token_accuracy:.4f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="demo-models", help="folder to write the model folders into")
    parser.add_argument("--models", nargs="+", default=["large", "small", "caller"],
                        choices=["large", "small", "caller"])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every step count (trials)")
    parser.add_argument("--train-problems", type=int, default=60000)
    parser.add_argument("--dev-problems", type=int, default=500, help="dev problems for greedy accuracy")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(2)
    started = time.perf_counter()
    out = Path(args.out)
    problems = train_problems(args.train_problems)
    texts = [text for p in problems[:4000] for text in (p.prompt, p.completion)]
    with tempfile.TemporaryDirectory() as tmp:  # each model folder gets its own copy
        tokenizer = build_task_tokenizer(Path(tmp), texts + [CHAT_WORDS] * 200, VOCAB_SIZE)
    vocab_size = len(tokenizer)
    examples = [make_example(tokenizer, p.prompt, p.completion) for p in problems]
    dev = eval_splits()["dev"]
    print(f"tokenizer: {vocab_size} tokens; {len(examples)} training sequences, mean "
          f"{sum(len(e.input_ids) for e in examples) / len(examples):.0f} tokens", flush=True)
    specs = {"large": LARGE, "small": SMALL}
    for key in [m for m in ("large", "small") if m in args.models]:
        spec = specs[key].model_copy(update={"steps": max(1, round(specs[key].steps * args.scale))})
        model = new_model(spec, vocab_size, tokenizer)
        num_params = sum(p.numel() for p in model.parameters())
        print(f"[{spec.name}] {num_params / 1e6:.2f} M parameters, {spec.steps} steps", flush=True)
        report = {"spec": spec.model_dump(), "num_parameters": num_params,
                  **fit(model, spec, examples, tokenizer.pad_token_id,
                        probe=lambda m: _probe(m, tokenizer, dev[:64]), probe_every=PROBE_EVERY[key])}
        save(model, tokenizer, out / spec.name, report)
        report.update(measure(model, tokenizer, dev, args.dev_problems))
        save(model, tokenizer, out / spec.name, report)
    if "caller" in args.models:
        from relay_ray.models.caller import train_caller

        train_caller(out, tokenizer, problems, dev, scale=args.scale, num_dev=args.dev_problems)
    print(f"done in {(time.perf_counter() - started) / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

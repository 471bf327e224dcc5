"""Train the demo model pair (and the RelayLLM caller) on the arithmetic task, deterministically.

``python -m relay_ray.models.train --out demo-models`` (``make demo-models``) trains the large
and the small model by teacher forcing on generated traces, then the caller variant of the
small one (:mod:`relay_ray.models.caller`), and saves each as a Hugging Face folder (bfloat16
safetensors, shared tokenizer) with a ``train-report.json`` of what was measured. Seeded:
the same command on the same machine writes the same weights. ``--scale 0.1`` runs a short
trial. Budget: about 21 minutes on 2 CPU cores for the whole set (docs/quality.md).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from relay_ray.models.sequences import make_example
from relay_ray.models.training import LARGE, SMALL, fit, new_model, save
from relay_ray.models.vocab import build_task_tokenizer
from relay_ray.tasks.splits import eval_splits, train_problems
from relay_ray.types import THINK_START

VOCAB_SIZE = 448  # the BPE saturates below this on the task's text (about 430 tokens)
# The chat template's own words, added to the tokenizer corpus so they become single tokens.
CHAT_WORDS = f"<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n{THINK_START}\n"
PROBE_EVERY = {"large": 200, "small": 100}


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

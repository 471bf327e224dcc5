"""Check in vLLM, as served, that a padded model answers like its source (greedy).

``python -m relay_ray.models.pad_check --source demo-models/arith-large --source-dtype float32
--padded models/arith-large-scaled --padded-dtype bfloat16 --limit 100`` generates greedy
completions of the first ``--limit`` prompts of a JSONL split with each model, in two
processes (one core each, at the same time; vLLM's offline ``LLM``, chat template applied as
the tiers apply it, block size 32, prefix caching on), and prints a JSON report: how many
completions are token-identical and how many final answers agree. Exit status 0.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def generate(model: str, dtype: str, prompts: list[str], max_tokens: int) -> list[list[int]]:
    """Greedy completion token ids of ``prompts`` (user messages) with vLLM's offline engine."""
    from vllm import LLM, SamplingParams

    llm = LLM(model=model, dtype=dtype, max_model_len=1024, block_size=32, enforce_eager=True,
              enable_prefix_caching=True, seed=0)
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    outputs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
    return [list(o.outputs[0].token_ids) for o in outputs]


def compare(source: list[list[int]], padded: list[list[int]], decode) -> dict:
    """Identical completions and agreeing ``Answer:`` lines (``decode``: token ids -> text)."""
    from relay_ray.quality.extract import extract, parse_format

    fmt = parse_format("answer-line")
    same = sum(a == b for a, b in zip(source, padded))
    answers = sum(extract(decode(a), fmt) == extract(decode(b), fmt) for a, b in zip(source, padded))
    first = next((i for i, (a, b) in enumerate(zip(source, padded)) if a != b), None)
    return {"num_prompts": len(source), "identical": same, "identical_share": same / len(source) if source else 0.0,
            "same_answer": answers, "first_difference": first}


def _child(args) -> int:
    prompts = json.loads(Path(args.prompts).read_text())
    ids = generate(args.model, args.dtype, prompts, args.max_tokens)
    Path(args.result).write_text(json.dumps(ids))
    return 0


def _spawn(model: str, dtype: str, core: str, prompts: Path, result: Path, max_tokens: int) -> subprocess.Popen:
    env = {**os.environ, "VLLM_CPU_OMP_THREADS_BIND": core, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "relay_ray.models.pad_check", "--child", "--model", model, "--dtype", dtype,
           "--prompts", str(prompts), "--result", str(result), "--max-tokens", str(max_tokens)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def check(source: str, source_dtype: str, padded: str, padded_dtype: str, prompts: list[str],
          max_tokens: int = 512) -> dict:
    """Both models' greedy completions of ``prompts``, compared (:func:`compare`)."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "prompts.json").write_text(json.dumps(prompts))
        procs = [_spawn(m, d, core, tmp / "prompts.json", tmp / f"{core}.json", max_tokens)
                 for m, d, core in ((source, source_dtype, "0"), (padded, padded_dtype, "1"))]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"generation failed ({proc.returncode}): {err[-2000:]}")
        a, b = (json.loads((tmp / f"{core}.json").read_text()) for core in ("0", "1"))
    tokenizer = AutoTokenizer.from_pretrained(source)
    return {"source": f"{source} ({source_dtype})", "padded": f"{padded} ({padded_dtype})",
            **compare(a, b, tokenizer.decode)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", default="demo-models/arith-large")
    p.add_argument("--source-dtype", default="float32")
    p.add_argument("--padded", default="models/arith-large-scaled")
    p.add_argument("--padded-dtype", default="bfloat16")
    p.add_argument("--data", default="data/arith/dev.jsonl")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--dtype", help=argparse.SUPPRESS)
    p.add_argument("--prompts", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return _child(args)
    from relay_ray.quality.dataset import load_dataset

    items, _ = load_dataset(args.data, args.limit)
    report = check(args.source, args.source_dtype, args.padded, args.padded_dtype, [i.prompt for i in items],
                   args.max_tokens)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A torch-only RelayLLM relay (batch 1, greedy) to check the caller right after training.

Same rules as :mod:`relay_ray.policies.relayllm`: the caller writes until ``</call>`` or
EOS; a well-formed ``<call>n</call>`` is removed and the large model writes ``n`` tokens;
after ``max_calls`` commands the caller is no longer stopped. The served numbers come from
``relay-ray eval``; this is the cheap estimate printed by the training script.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay_ray.models.greedy import extract_answer
from relay_ray.models.sequences import encode_prompt
from relay_ray.policies.relayllm import CALL_RE
from relay_ray.types import CALL_CLOSE, CALL_OPEN


def _greedy(model, ids: list[int], max_new: int, stop_ids: list[int]) -> list[int]:
    import torch

    if max_new <= 0:
        return []
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=max_new, do_sample=False, eos_token_id=stop_ids,
                             pad_token_id=stop_ids[0])
    return out[0, len(ids):].tolist()


@dataclass(frozen=True)
class RelayedAnswer:
    """One relayed greedy answer: the output ids (commands removed, EOS included when written)
    and who wrote how many of them."""

    token_ids: tuple[int, ...]
    num_large_tokens: int
    num_small_tokens: int
    num_calls: int


def relayllm_relay(caller, large, tokenizer, prompt_ids: list[int], max_new_tokens: int = 400,
                   max_calls: int = 32) -> RelayedAnswer:
    """Relay one answer after ``prompt_ids`` (a rendered, tokenized prompt)."""
    eos = tokenizer.eos_token_id
    call_open, call_close = tokenizer.convert_tokens_to_ids([CALL_OPEN, CALL_CLOSE])
    out: list[int] = []
    large_tokens = small_tokens = calls = 0
    while len(out) < max_new_tokens:
        stops = [eos, call_close] if calls < max_calls else [eos]
        seg = _greedy(caller, prompt_ids + out, max_new_tokens - len(out), stops)
        match = CALL_RE.search(tokenizer.decode(seg)) if seg and seg[-1] == call_close else None
        if seg and seg[-1] == call_close:
            calls += 1
        if match is None:  # EOS, budget, or a malformed command (kept as text, like the policy)
            out += seg
            small_tokens += len(seg)
            if not seg or seg[-1] != call_close:
                break
            continue
        kept = seg[:seg.index(call_open)] if call_open in seg else seg
        out += kept
        small_tokens += len(kept)
        written = _greedy(large, prompt_ids + out, min(int(match.group(1)), max_new_tokens - len(out)), [eos])
        out += written
        large_tokens += len(written)
        if written and written[-1] == eos:
            break
    return RelayedAnswer(tuple(out), large_tokens, small_tokens, calls)


def relayllm_generate(caller, large, tokenizer, prompt: str, max_new_tokens: int = 400,
                      max_calls: int = 32) -> tuple[str, int, int, int]:
    """(text, large tokens, small tokens, calls) of one relayed greedy answer to a user prompt."""
    answer = relayllm_relay(caller, large, tokenizer, encode_prompt(tokenizer, prompt), max_new_tokens, max_calls)
    return (tokenizer.decode(answer.token_ids, skip_special_tokens=True), answer.num_large_tokens,
            answer.num_small_tokens, answer.num_calls)


def relayllm_accuracy(caller, large, tokenizer, problems) -> dict:
    right = large_tokens = total = calls = 0
    for p in problems:
        text, lg, sm, c = relayllm_generate(caller, large, tokenizer, p.prompt)
        right += extract_answer(text) == str(p.answer)
        large_tokens, total, calls = large_tokens + lg, total + lg + sm, calls + c
    n = max(len(problems), 1)
    return {"problems": len(problems), "accuracy": right / n, "large_share": large_tokens / max(total, 1),
            "calls_per_problem": calls / n}


def main(argv: list[str] | None = None) -> int:
    """Write the torch reference's answers item by item (JSONL: id, correct, text, tokens per
    tier, calls), to compare with a served ``relay-ray eval --keep-text`` run item by item."""
    import argparse
    import json

    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relay_ray.quality.dataset import load_dataset

    parser = argparse.ArgumentParser(prog="python -m relay_ray.models.relay_sim", description=main.__doc__)
    parser.add_argument("--data", required=True, help="JSONL dataset ({id, prompt, answer} per line)")
    parser.add_argument("--out", required=True, help="JSONL file for the per-item answers")
    parser.add_argument("--caller", default="demo-models/arith-caller")
    parser.add_argument("--large", default="demo-models/arith-large")
    parser.add_argument("--limit", type=int, default=None, help="only the first N items")
    parser.add_argument("--max-new-tokens", type=int, default=512)
    parser.add_argument("--max-calls", type=int, default=32)
    args = parser.parse_args(argv)
    items, errors = load_dataset(args.data, args.limit)
    if errors:
        parser.error(f"{args.data}: {len(errors)} bad line(s), first: {errors[0]}")
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(args.caller)
    caller = AutoModelForCausalLM.from_pretrained(args.caller, dtype=torch.float32).eval()
    large = AutoModelForCausalLM.from_pretrained(args.large, dtype=torch.float32).eval()
    right = 0
    with open(args.out, "w") as out:
        for item in tqdm(items, desc="torch relayllm"):
            text, num_large, num_small, calls = relayllm_generate(caller, large, tokenizer, item.prompt,
                                                                  args.max_new_tokens, args.max_calls)
            correct = extract_answer(text) == str(item.answer)
            right += correct
            out.write(json.dumps({"id": item.id, "correct": correct, "text": text, "large_tokens": num_large,
                                  "small_tokens": num_small, "calls": calls}) + "\n")
    print(f"accuracy {right / max(len(items), 1):.3f} on {len(items)} items; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cheap torch-side measurements of a trained model (no vLLM): greedy accuracy and per-token
behaviour on hard and easy spans of the gold traces.

Used by the training script to report progress and by tests; the served-system numbers come
from ``relay-ray eval``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from relay_ray.models.sequences import encode_prompt
from relay_ray.tasks.arith import Problem, char_labels

ANSWER_RE = re.compile(r"Answer:\s*(-?\d+)")


def extract_answer(text: str) -> str | None:
    """The number on the last ``Answer: N`` line of ``text`` (None when there is none)."""
    found = ANSWER_RE.findall(text)
    return found[-1] if found else None


def greedy_completions(model, tokenizer, prompts: Sequence[str], max_new_tokens: int = 320,
                       batch_size: int = 64) -> list[str]:
    """Greedy completions of user prompts (chat-rendered, left-padded batches)."""
    import torch

    out: list[str] = []
    model.eval()
    for start in range(0, len(prompts), batch_size):
        encoded = [encode_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        width = max(len(e) for e in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, e in enumerate(encoded):
            ids[row, width - len(e):] = torch.tensor(e)
            mask[row, width - len(e):] = 1
        with torch.no_grad():
            gen = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id)
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out


def accuracy(model, tokenizer, problems: Sequence[Problem], batch_size: int = 64) -> float:
    """Share of problems whose greedy completion ends in the right ``Answer: N``."""
    texts = greedy_completions(model, tokenizer, [p.prompt for p in problems], batch_size=batch_size)
    right = sum(extract_answer(t) == str(p.answer) for t, p in zip(texts, problems))
    return right / len(problems) if problems else 0.0


@dataclass(frozen=True)
class SpanStats:
    """Teacher-forced behaviour on the gold traces, split by span kind."""

    hard_token_accuracy: float  # argmax == gold on hard tokens
    easy_token_accuracy: float
    hard_mean_entropy: float  # normalized entropy H / log V
    easy_mean_entropy: float
    hard_token_share: float  # hard tokens / completion tokens


def hard_token_flags(tokenizer, completion: str) -> list[bool]:
    """Per completion token (plus the final EOS): does it overlap a hard span?"""
    flags = char_labels(completion)
    ids = tokenizer.encode(completion, add_special_tokens=False)
    out, start = [], 0
    for i in range(len(ids)):
        end = len(tokenizer.decode(ids[: i + 1]))
        out.append(any(flags[start:end]))
        start = end
    return out + [False]


def span_stats(model, tokenizer, problems: Sequence[Problem]) -> SpanStats:
    """Teacher-force ``problems`` and compare argmax predictions with the gold tokens."""
    import torch

    from relay_ray.models.sequences import collate, make_example

    sums = {True: [0, 0, 0.0], False: [0, 0, 0.0]}  # kind -> [tokens, right, entropy sum]
    log_v = math.log(model.config.vocab_size)
    model.eval()
    for start in range(0, len(problems), 32):
        chunk = problems[start:start + 32]
        examples = [make_example(tokenizer, p.prompt, p.completion) for p in chunk]
        ids, mask, labels = collate(examples, tokenizer.pad_token_id)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
        logp = torch.log_softmax(logits, -1)
        entropy = -(logp.exp() * logp).sum(-1) / log_v
        pred = logits.argmax(-1)
        for row, (p, e) in enumerate(zip(chunk, examples)):
            flags = hard_token_flags(tokenizer, p.completion)
            first = e.num_prompt_tokens - 1
            for k, hard in enumerate(flags):
                pos = first + k
                s = sums[hard]
                s[0] += 1
                s[1] += int(pred[row, pos] == labels[row, pos])
                s[2] += float(entropy[row, pos])
    h, z = sums[True], sums[False]
    return SpanStats(
        hard_token_accuracy=h[1] / max(h[0], 1), easy_token_accuracy=z[1] / max(z[0], 1),
        hard_mean_entropy=h[2] / max(h[0], 1), easy_mean_entropy=z[2] / max(z[0], 1),
        hard_token_share=h[0] / max(h[0] + z[0], 1),
    )

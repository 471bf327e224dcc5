"""The RelayLLM caller: the small model fine-tuned to write ``<call>n</call>`` before the spans
it tends to get wrong (RelayLLM's supervised warm-up, with labels from the models themselves).

Labels: both trained models are teacher-forced over gold training traces. A completion token
is a *call spot* when the large model is confident of it (probability >= ``LARGE_SURE``) and
the small model is not (its greedy token differs, or it gives the large model's token less
than ``SMALL_UNSURE``). The span handed over runs from the spot to the end of the number it
is in (``n`` tokens; 1 when the spot is not a digit). Overlapping spans merge.

Training sequences mirror serving (:mod:`relay_ray.policies.relayllm`), where a command is
removed from the text once the large model has written its span, so the caller never sees
an earlier command in its context:

- *clean* sequences: the gold trace; at each call spot the target is ``<call>`` instead of
  the gold token, and the span's own tokens carry no loss (the large model writes them);
- *command* sequences: the trace up to one call spot, then ``<call>n</call>``, with loss on
  ``n`` and ``</call>`` only.
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from relay_ray.models.sequences import IGNORE, Example, make_example
from relay_ray.models.training import SMALL, fit, save
from relay_ray.types import CALL_CLOSE, CALL_OPEN

LARGE_SURE = 0.9
SMALL_UNSURE = 0.9
CALL_STEPS = 300  # fine-tuning steps at --scale 1
NUM_LABELLED = 4000  # training problems labelled with call spots


def call_spans(tokenizer, large, small, examples: list[Example]) -> list[list[tuple[int, int]]]:
    """Per example, ``(position, n)`` pairs: the large model writes tokens
    ``input_ids[position : position + n]``."""
    import torch

    from relay_ray.models.sequences import collate

    out: list[list[tuple[int, int]]] = []
    is_digit = [tokenizer.decode([i]).strip().isdigit() for i in range(len(tokenizer))]
    large.eval()
    small.eval()
    for start in range(0, len(examples), 32):
        batch = examples[start:start + 32]
        ids, mask, labels = collate(batch, tokenizer.pad_token_id)
        with torch.no_grad():
            p_large = torch.softmax(large(input_ids=ids, attention_mask=mask).logits.float(), -1)
            p_small = torch.softmax(small(input_ids=ids, attention_mask=mask).logits.float(), -1)
        large_top, large_tok = p_large.max(-1)
        small_tok = p_small.argmax(-1)
        small_p_of_large = p_small.gather(-1, large_tok.unsqueeze(-1)).squeeze(-1)
        spot = (labels != IGNORE) & (large_top >= LARGE_SURE) & (
            (small_tok != large_tok) | (small_p_of_large < SMALL_UNSURE))
        for row, e in enumerate(batch):
            spans: list[tuple[int, int]] = []
            end_of_last = -1
            for pos in spot[row].nonzero().flatten().tolist():
                token_pos = pos + 1  # the token predicted at ``pos``
                if token_pos <= end_of_last or token_pos >= len(e.input_ids) - 1:
                    continue
                end = token_pos + 1
                while is_digit[e.input_ids[token_pos]] and end < len(e.input_ids) - 1 and is_digit[e.input_ids[end]]:
                    end += 1
                spans.append((token_pos, end - token_pos))
                end_of_last = end - 1
            out.append(spans)
    return out


def caller_examples(tokenizer, examples: list[Example], spans: list[list[tuple[int, int]]],
                    seed: int = 3, commands_per_example: int = 2) -> list[Example]:
    """Clean and command sequences (see the module docstring)."""
    call_open, call_close = tokenizer.convert_tokens_to_ids([CALL_OPEN, CALL_CLOSE])
    rng = random.Random(seed)
    out: list[Example] = []
    for e, sp in zip(examples, spans):
        labels = list(e.labels)
        for pos, n in sp:
            labels[pos - 1] = call_open
            for k in range(pos, pos + n - 1):
                labels[k] = IGNORE
        out.append(Example(e.input_ids, tuple(labels), e.num_prompt_tokens))
        for pos, n in rng.sample(sp, min(commands_per_example, len(sp))):
            number = tokenizer.encode(str(n), add_special_tokens=False)
            ids = list(e.input_ids[:pos]) + [call_open] + number + [call_close]
            cmd_labels = [IGNORE] * len(ids)
            cmd_labels[pos - 1] = call_open
            for k, target in enumerate(number + [call_close]):
                cmd_labels[pos + k] = target
            out.append(Example(tuple(ids), tuple(cmd_labels), e.num_prompt_tokens))
    rng.shuffle(out)
    return out


def train_caller(out_dir: Path, tokenizer, problems, dev, scale: float = 1.0, num_dev: int = 500) -> None:
    """Label call spots with the saved large and small models, fine-tune a copy of the small
    one into ``out_dir / "arith-caller"`` and report its torch-side RelayLLM accuracy."""
    import torch
    from transformers import AutoModelForCausalLM

    from relay_ray.models.relay_sim import relayllm_accuracy

    started = time.perf_counter()
    large = AutoModelForCausalLM.from_pretrained(str(out_dir / "arith-large"), dtype=torch.float32)
    small = AutoModelForCausalLM.from_pretrained(str(out_dir / "arith-small"), dtype=torch.float32)
    count = max(64, round(NUM_LABELLED * min(1.0, scale * 4)))
    labelled = [make_example(tokenizer, p.prompt, p.completion) for p in problems[-count:]]
    spans = call_spans(tokenizer, large, small, labelled)
    num_spots = sum(len(s) for s in spans)
    num_tokens = sum(n for s in spans for _, n in s)
    completion_tokens = sum(sum(1 for x in e.labels if x != IGNORE) for e in labelled)
    print(f"[caller] {num_spots} call spots in {count} traces ({num_spots / count:.2f} per trace, "
          f"{100 * num_tokens / completion_tokens:.1f}% of completion tokens handed over); "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    data = caller_examples(tokenizer, labelled, spans)
    spec = SMALL.model_copy(update={"name": "arith-caller", "steps": max(1, round(CALL_STEPS * scale)),
                                    "peak_lr": 1e-3, "warmup_steps": 20, "seed": 3})
    report = {"spec": spec.model_dump(), "base": "arith-small", "num_labelled_traces": count,
              "num_call_spots": num_spots, "handed_over_token_share": num_tokens / completion_tokens,
              "rule": {"large_sure": LARGE_SURE, "small_unsure": SMALL_UNSURE},
              **fit(small, spec, data, tokenizer.pad_token_id)}
    save(small, tokenizer, out_dir / "arith-caller", report)
    sim = relayllm_accuracy(small, large, tokenizer, dev[:min(num_dev, 200)])
    print(f"  [caller] torch relayllm on {sim['problems']} dev problems: accuracy {sim['accuracy']:.3f}, "
          f"large share {sim['large_share']:.3f}, calls/problem {sim['calls_per_problem']:.1f}", flush=True)
    report["dev_relayllm_torch"] = sim
    save(small, tokenizer, out_dir / "arith-caller", report)

"""Training sequences for the demo models: chat-rendered prompt + gold completion + EOS.

The prompt is rendered with the shared chat template (which opens ``<think>``) and tokenized
on its own, exactly as a serving tier tokenizes it; the completion is tokenized separately
and appended. Loss is taken on the completion and the end-of-sequence token only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

IGNORE = -100  # label of a position that carries no loss


@dataclass(frozen=True)
class Example:
    """Token ids and per-position labels (``IGNORE`` = no loss) of one training sequence.

    ``labels[i]`` is the target predicted *at* position ``i`` (i.e. already shifted):
    the model reading ``input_ids[: i + 1]`` should output ``labels[i]``.
    """

    input_ids: tuple[int, ...]
    labels: tuple[int, ...]
    num_prompt_tokens: int


def render_prompt(tokenizer, user_text: str) -> str:
    """The chat-template text a tier renders for one user message."""
    return tokenizer.apply_chat_template(
        [{"role": "user", "content": user_text}], add_generation_prompt=True, tokenize=False)


def encode_prompt(tokenizer, user_text: str) -> list[int]:
    return tokenizer.encode(render_prompt(tokenizer, user_text), add_special_tokens=False)


def make_example(tokenizer, user_text: str, completion: str) -> Example:
    """Teacher-forcing example: predict every completion token and then EOS."""
    prompt_ids = encode_prompt(tokenizer, user_text)
    completion_ids = tokenizer.encode(completion, add_special_tokens=False) + [tokenizer.eos_token_id]
    ids = prompt_ids + completion_ids
    labels = [IGNORE] * (len(prompt_ids) - 1) + completion_ids + [IGNORE]
    return Example(tuple(ids), tuple(labels), len(prompt_ids))


def collate(examples: Sequence[Example], pad_id: int):
    """Right-padded ``(input_ids, attention_mask, labels)`` tensors for a batch."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        mask[row, :n] = 1
        labels[row, :n] = torch.tensor(e.labels)
    return ids, mask, labels

"""A small synthetic text corpus used to train the tiny models' tokenizer.

It contains the words, discourse cues and markup (``<think>``, ``<call>``) that relay
policies look for, so that they are single tokens or short token runs in the vocabulary.
"""

from __future__ import annotations

import random

from relay_ray.types import CALL_CLOSE, CALL_OPEN, THINK_END, THINK_START

CUE_WORDS = (
    "So", "So,", "Therefore", "Therefore,", "Thus", "Thus,", "Now", "Now,", "Hence", "Wait,",
    "Again", "Similarly,", "Alternatively", "Also", "In summary", "Now compute", "Wait, check",
)
NOUNS = ("sum", "product", "total", "value", "answer", "result", "number", "step", "digit", "carry")
VERBS = ("add", "multiply", "check", "compute", "copy", "restate", "write", "keep", "note")


def sentences(seed: int, count: int) -> list[str]:
    """Return ``count`` pseudo-reasoning sentences, deterministic for ``seed``."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        a, b = rng.randint(2, 999), rng.randint(2, 99)
        cue = rng.choice(CUE_WORDS)
        noun, verb = rng.choice(NOUNS), rng.choice(VERBS)
        form = rng.randrange(4)
        if form == 0:
            out.append(f"{cue} we {verb} {a} and {b}, so the {noun} is {a + b}.")
        elif form == 1:
            out.append(f"{cue} the {noun} of {a} times {b} is {a * b}!")
        elif form == 2:
            out.append(f"Is the {noun} {a - b}? {cue} we {verb} it again.")
        else:
            out.append(f"{cue} {verb} the {noun}: {a} plus {b} gives {a + b}.\n\n")
    return out


def training_text(seed: int = 0, count: int = 4000) -> list[str]:
    """Lines for tokenizer training, with the chat and tool markup the templates use."""
    lines = sentences(seed, count)
    lines += [
        f"<|im_start|>user\nWhat is 12 plus 30?<|im_end|>\n<|im_start|>assistant\n{THINK_START}\n",
        f"{THINK_END}\n\nAnswer: 42",
        " ".join(f"{CALL_OPEN}{n}{CALL_CLOSE}" for n in (8, 16, 32)),
    ]
    return lines

"""A seeded synthetic reasoning task: two-step arithmetic word problems with a digit-level trace.

Each problem is a product and a sum (``a*n + b`` or ``(a+b)*n``) told as a short story. The
solution is a chain of thought, written the way reasoning models write, then a short answer
section::

    We need 147*3, then add 25.
    Now compute 147*3: 7*3+0=21, carry 2, so far 1.
    Next, 4*3+2=14, carry 1, so far 41.
    Next, 1*3+1=4, so far 441.
    So the product is 441.
    Now compute 441+25: 1+5+0=6, carry 0, so far 6.
    ...
    Therefore, the answer is 466.
    </think>

    Tom has 466 apples.
    Answer: 466

Hard spans are the computed values (the digits after ``=`` in a step or a check: one
single-digit fact plus a carry each); everything else restates or copies earlier text.
Discourse cues mark the two kinds: ``Now compute``, ``Next,`` and ``Wait, check`` open
sentences that contain hard digits; ``So``, ``Therefore,`` and ``In summary,`` open
restatements. :func:`char_labels` says which characters of a completion are hard.

Everything here is pure Python and deterministic for a given ``random.Random``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from relay_ray.types import THINK_END

NAMES = ("Tom", "Ana", "Ben", "Mia", "Sam", "Eva")
ITEMS = ("apples", "pens", "books", "cards", "eggs", "coins")
HARD_CUES = ("Now compute", "Next,", "Wait, check")
EASY_CUES = ("So", "Therefore,", "In summary,")
# Mid-sentence phrases whose continuation copies digits already written ("carry 1, so far 80"
# after "4*4+2=18" and "so far 0"): extra RelayGen cue candidates for calibration.
COPY_PHRASES = ("so far", ", carry")
# Computed values: the digits after "=" in a step ("7*3+0=21", "9+4+1=14") or a check
# ("check 3*4=12"); restatements ("So the product is 441.") copy and are not hard.
_HARD_VALUE = re.compile(r"(?:\d[*+]\d\+\d|check \d\*\d)=(\d+)")


@dataclass(frozen=True)
class Problem:
    """One problem: the user prompt, the gold completion and the answer.

    ``completion`` is what a model writes after the chat template's opening ``<think>\\n``:
    the trace, ``</think>``, and the answer section (without the end-of-sequence token).
    """

    id: str
    kind: str  # "mul_add" (a*n + b) or "add_mul" ((a+b)*n)
    operands: tuple[int, int, int]  # (a, b, n)
    prompt: str
    completion: str
    answer: int

    def record(self) -> dict:
        """The JSONL record of an evaluation split."""
        return {"id": self.id, "prompt": self.prompt, "answer": str(self.answer)}


def _digits_low_first(value: int, width: int) -> list[int]:
    return [(value // 10**i) % 10 for i in range(width)]


def _column_lines(header: str, columns: list[tuple[str, int]]) -> list[str]:
    """A written column operation, lowest digit first: ``columns`` are (expression, value)
    of each column without the carry, e.g. ``("7*3", 21)``; each line adds the carry in."""
    lines, carry, so_far = [], 0, ""
    for i, (expression, column_value) in enumerate(columns):
        value = column_value + carry
        last = i == len(columns) - 1
        so_far = (str(value) if last else str(value % 10)) + so_far
        tail = f", so far {so_far}." if last else f", carry {value // 10}, so far {so_far}."
        lines.append(f"{header if i == 0 else 'Next, '}{expression}+{carry}={value}{tail}")
        carry = value // 10
    return lines


def _mul_lines(x: int, n: int) -> list[str]:
    """Long multiplication of ``x`` by the single digit ``n``, lowest digit first."""
    digits = _digits_low_first(x, len(str(x)))
    return _column_lines(f"Now compute {x}*{n}: ", [(f"{d}*{n}", d * n) for d in digits])


def _add_lines(x: int, y: int) -> list[str]:
    """Column addition of ``x`` and ``y``, lowest digit first (the shorter one padded with 0)."""
    width = max(len(str(x)), len(str(y)))
    pairs = zip(_digits_low_first(x, width), _digits_low_first(y, width))
    return _column_lines(f"Now compute {x}+{y}: ", [(f"{dx}+{dy}", dx + dy) for dx, dy in pairs])


def _story(kind: str, a: int, b: int, n: int, name: str, item: str) -> tuple[str, str]:
    """(prompt, answer sentence) for a problem."""
    if kind == "mul_add":
        prompt = (f"{name} has {n} boxes with {a} {item} in each box. {name} gets {b} more {item}. "
                  f"How many {item} does {name} have now?")
        return prompt, f"{name} has {a * n + b} {item} now."
    prompt = (f"One box holds {a} red {item} and {b} blue {item}. {name} buys {n} boxes. "
              f"How many {item} does {name} buy?")
    return prompt, f"{name} buys {(a + b) * n} {item}."


def make_problem(rng: random.Random, problem_id: str, kind: str | None = None) -> Problem:
    """Draw one problem from ``rng`` (a ``random.Random``); ``kind`` picks the story type."""
    kind = kind or rng.choice(("mul_add", "add_mul"))
    n = rng.randint(2, 9)
    if kind == "mul_add":
        a, b = rng.randint(12, 999), rng.randint(10, 999)
    elif kind == "add_mul":
        a, b = rng.randint(10, 499), rng.randint(10, 499)
    else:
        raise ValueError(f"unknown problem kind {kind!r}; expected 'mul_add' or 'add_mul'")
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    prompt, answer_sentence = _story(kind, a, b, n, name, item)
    if kind == "mul_add":
        first, answer = a * n, a * n + b
        lines = [f"We need {a}*{n}, then add {b}.", *_mul_lines(a, n), f"So the product is {first}."]
        top = int(str(a)[0])
        if rng.random() < 0.5:
            lines.append(f"Wait, check {n}*{top}={n * top}.")
        lines += [*_add_lines(first, b), f"So the sum is {answer}."]
    else:
        first, answer = a + b, (a + b) * n
        lines = [f"We need {a}+{b}, then times {n}.", *_add_lines(a, b), f"So the sum is {first}."]
        lines += [*_mul_lines(first, n), f"So the product is {answer}."]
        if rng.random() < 0.5:
            top = int(str(first)[0])
            lines.append(f"Wait, check {n}*{top}={n * top}.")
    lines.append(f"{rng.choice(('Therefore,', 'In summary,'))} the answer is {answer}.")
    completion = "\n".join(lines) + f"\n{THINK_END}\n\n{answer_sentence}\nAnswer: {answer}"
    return Problem(problem_id, kind, (a, b, n), prompt, completion, answer)


def char_labels(completion: str) -> list[bool]:
    """One flag per character of ``completion``: True where it belongs to a hard span."""
    flags = [False] * len(completion)
    end = completion.find(THINK_END)
    for m in _HARD_VALUE.finditer(completion, 0, end if end >= 0 else len(completion)):
        for i in range(m.start(1), m.end(1)):
            flags[i] = True
    return flags


def generate(seed: int, count: int, prefix: str, exclude: set[tuple] | None = None) -> list[Problem]:
    """``count`` distinct problems from ``seed``; operand triples in ``exclude`` are skipped
    (and the new ones added to it), so splits drawn in turn never share a problem."""
    rng = random.Random(seed)
    seen = exclude if exclude is not None else set()
    out: list[Problem] = []
    while len(out) < count:
        p = make_problem(rng, f"{prefix}-{len(out):05d}")
        key = (p.kind, *p.operands)
        if key in seen:
            continue
        seen.add(key)
        out.append(p)
    return out

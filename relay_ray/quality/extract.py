"""Answer extraction and comparison.

Formats: ``answer-line`` (the last ``Answer: X`` line), ``boxed`` (the last ``\\boxed{X}``,
nested braces allowed) and ``regex:PATTERN`` (the last match; its first group if it has
one). Answers compare as numbers when both parse as numbers (``1,234`` = ``1234.0``), else
as stripped strings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KNOWN_FORMATS = ("answer-line", "boxed", "regex:<pattern>")
_ANSWER_LINE = re.compile(r"Answer:\s*([^\n]*)")


@dataclass(frozen=True)
class AnswerFormat:
    """How to find the final answer in a model's text."""

    name: str  # answer-line | boxed | regex
    pattern: str = ""

    def __str__(self) -> str:
        return f"regex:{self.pattern}" if self.name == "regex" else self.name


def parse_format(spec: str) -> AnswerFormat:
    """``answer-line`` | ``boxed`` | ``regex:PATTERN``; ValueError names the known formats."""
    if spec in ("answer-line", "boxed"):
        return AnswerFormat(spec)
    if spec.startswith("regex:"):
        pattern = spec[len("regex:"):]
        if not pattern:
            raise ValueError("answer format 'regex:' needs a pattern after the colon")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"answer format {spec!r}: invalid regular expression ({exc})") from None
        return AnswerFormat("regex", pattern)
    raise ValueError(f"unknown answer format {spec!r}; known formats: {', '.join(KNOWN_FORMATS)}")


def _last_boxed(text: str) -> str | None:
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, i = 1, start + len("\\boxed{")
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None  # unbalanced: no answer


def extract(text: str, fmt: AnswerFormat) -> str | None:
    """The answer found in ``text`` (stripped), or None."""
    if fmt.name == "answer-line":
        found = _ANSWER_LINE.findall(text)
        value = found[-1] if found else None
    elif fmt.name == "boxed":
        value = _last_boxed(text)
    else:
        matches = list(re.finditer(fmt.pattern, text))
        if not matches:
            return None
        last = matches[-1]
        value = last.group(1) if last.re.groups else last.group(0)
    if value is None:
        return None
    value = value.strip().rstrip(".").strip()
    return value or None


def _as_number(value: str) -> float | None:
    try:
        return float(value.replace(",", "").replace(" ", ""))
    except ValueError:
        return None


def same_answer(predicted: str | None, gold: str) -> bool:
    """True when ``predicted`` equals ``gold`` (numerically when both are numbers)."""
    if predicted is None:
        return False
    a, b = _as_number(predicted), _as_number(gold)
    if a is not None and b is not None:
        return a == b
    return predicted.strip() == gold.strip()

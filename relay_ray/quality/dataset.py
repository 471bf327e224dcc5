"""Evaluation datasets: JSONL, one ``{"id", "prompt", "answer"}`` object per line.

Loading never stops at a bad line: every malformed line (not JSON, not an object, a missing
or mistyped field, a duplicate id, an unknown per-line ``answer_format``) is reported with
its line number and the valid lines are returned to run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from relay_ray.quality.extract import AnswerFormat, parse_format


@dataclass(frozen=True)
class Item:
    """One evaluation problem. ``answer_format`` overrides the run's default when set."""

    id: str
    prompt: str
    answer: str
    line: int
    answer_format: AnswerFormat | None = None


@dataclass(frozen=True)
class LineError:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _parse_line(raw: str, number: int) -> Item:
    """One JSONL line -> Item; raises ValueError with a message naming the problem."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"expected a JSON object with id, prompt and answer, got {type(obj).__name__}")
    missing = [k for k in ("id", "prompt", "answer") if k not in obj]
    if missing:
        raise ValueError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}")
    if not isinstance(obj["id"], (str, int)) or isinstance(obj["id"], bool) or str(obj["id"]) == "":
        raise ValueError("field 'id' must be a non-empty string or an integer")
    if not isinstance(obj["prompt"], str) or not obj["prompt"].strip():
        raise ValueError("field 'prompt' must be a non-empty string")
    answer = obj["answer"]
    if isinstance(answer, bool) or not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        raise ValueError("field 'answer' must be a non-empty string or a number")
    fmt = None
    if "answer_format" in obj:
        if not isinstance(obj["answer_format"], str):
            raise ValueError("field 'answer_format' must be a string")
        fmt = parse_format(obj["answer_format"])  # ValueError names the known formats
    return Item(str(obj["id"]), obj["prompt"], str(answer).strip(), number, fmt)


def load_dataset(path: str | Path, limit: int | None = None) -> tuple[list[Item], list[LineError]]:
    """Valid items (at most ``limit``) and one error per bad line. Blank lines are skipped.

    Raises FileNotFoundError (with the path) when the file does not exist.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"dataset not found: {path}")
    items: list[Item] = []
    errors: list[LineError] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                item = _parse_line(raw, number)
            except ValueError as exc:
                errors.append(LineError(number, str(exc)))
                continue
            if item.id in seen:
                errors.append(LineError(number, f"duplicate id {item.id!r} (first on line {seen[item.id]})"))
                continue
            seen[item.id] = number
            if limit is None or len(items) < limit:
                items.append(item)
    return items, errors

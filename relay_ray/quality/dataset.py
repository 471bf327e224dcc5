"""Evaluation datasets: JSONL, one ``{"id", "prompt", "answer"}`` object per line.

Loading never stops at a bad line: every malformed line (not JSON, not an object, a missing
or mistyped field, a duplicate id, an unknown per-line ``answer_format``) is reported with
its line number and the valid lines are returned to run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

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


class _Line(BaseModel):
    """The schema of one line; extra keys are allowed and ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    id: str | int
    prompt: str
    answer: str | int | float
    answer_format: str | None = None

    @field_validator("id")
    @classmethod
    def _id(cls, value):
        if str(value) == "":
            raise ValueError("must be a non-empty string or an integer")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must be a non-empty string")
        return value

    @field_validator("answer")
    @classmethod
    def _answer(cls, value):
        if str(value).strip() == "":
            raise ValueError("must be a non-empty string or a number")
        return value


_TYPE_RULES = {"id": "a non-empty string or an integer", "prompt": "a non-empty string",
               "answer": "a non-empty string or a number", "answer_format": "a string"}


def _message(exc: ValidationError) -> str:
    """One line naming what is wrong with a line (all missing fields, else the first error)."""
    errors = exc.errors()
    if errors[0]["type"] == "json_invalid":
        return f"not valid JSON ({errors[0]['ctx']['error']})"
    if errors[0]["type"] == "model_type":
        return f"expected a JSON object with id, prompt and answer, got {type(errors[0]['input']).__name__}"
    missing = [str(e["loc"][0]) for e in errors if e["type"] == "missing"]
    if missing:
        return f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}"
    field = str(errors[0]["loc"][0])
    return f"field {field!r} must be {_TYPE_RULES.get(field, 'valid')}"


def _parse_line(raw: str, number: int) -> Item:
    """One JSONL line -> Item; raises ValueError with a message naming the problem."""
    try:
        line = _Line.model_validate_json(raw)
    except ValidationError as exc:
        raise ValueError(_message(exc)) from None
    fmt = parse_format(line.answer_format) if line.answer_format is not None else None  # names known formats
    return Item(str(line.id), line.prompt, str(line.answer).strip(), number, fmt)


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

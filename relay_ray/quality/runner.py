"""Send an evaluation dataset through a running relay (gRPC) for one policy run.

Each item is one greedy chat request (the prompt as a user message, rendered by the large
tier's chat template). Request ids are ``LABEL/ITEM_ID``, so seeded policies (``random``)
route an item the same way on every run. A failed request is recorded with its error and
counts as wrong; the run goes on.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from relay_ray.quality.dataset import Item
from relay_ray.quality.extract import AnswerFormat, extract, same_answer
from relay_ray.quality.runs import PolicyRun


@dataclass(frozen=True)
class ItemResult:
    id: str
    correct: bool
    predicted: str | None
    gold: str
    large_tokens: int = 0
    small_tokens: int = 0
    num_switches: int = 0
    latency_ms: float = 0.0  # measured by the relay controller
    client_ms: float = 0.0  # measured around the gRPC call
    finish_reason: str = ""
    error: str = ""
    text: str = ""


class Progress:
    """A one-line progress bar on stderr (a line per 10% when stderr is not a terminal)."""

    def __init__(self, label: str, total: int, stream=None) -> None:
        self.label, self.total, self.stream = label, total, stream or sys.stderr
        self.done = self.right = 0
        self.started = time.perf_counter()
        self.tty = self.stream.isatty()
        self._last_decile = -1

    def update(self, result: ItemResult) -> None:
        self.done += 1
        self.right += int(result.correct)
        elapsed = time.perf_counter() - self.started
        width = 24
        filled = width * self.done // max(self.total, 1)
        line = (f"{self.label:<28.28} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                f"acc {self.right / self.done:.3f}  {self.done / max(elapsed, 1e-9):.1f} req/s")
        if self.tty:
            print("\r" + line, end="\n" if self.done == self.total else "", file=self.stream, flush=True)
        elif 10 * self.done // max(self.total, 1) > self._last_decile:
            self._last_decile = 10 * self.done // max(self.total, 1)
            print(line, file=self.stream, flush=True)


def _one(client, item: Item, run: PolicyRun, params: dict, fmt: AnswerFormat, max_new_tokens: int,
         keep_text: bool) -> ItemResult:
    import grpc

    from relay_ray.client import build_request
    from relay_ray.types import ChatMessage

    fmt = item.answer_format or fmt
    request = build_request([ChatMessage("user", item.prompt)], run.policy, params,
                            max_new_tokens=max_new_tokens, request_id=f"{run.label}/{item.id}")
    started = time.perf_counter()
    try:
        response = client.generate(request)
    except grpc.RpcError as exc:
        return ItemResult(item.id, False, None, item.answer, error=f"{exc.code().name}: {exc.details()}")
    client_ms = (time.perf_counter() - started) * 1000.0
    s = response.stats
    predicted = extract(response.text, fmt)
    from relay_ray.v1 import common_pb2

    return ItemResult(
        item.id, same_answer(predicted, item.answer), predicted, item.answer,
        large_tokens=s.large_tokens, small_tokens=s.small_tokens, num_switches=s.num_switches,
        latency_ms=s.latency_ms, client_ms=client_ms,
        finish_reason=common_pb2.FinishReason.Name(s.finish_reason).removeprefix("FINISH_REASON_").lower(),
        text=response.text if keep_text else "",
    )


def run_items(client, items: list[Item], run: PolicyRun, params: dict, fmt: AnswerFormat,
              max_new_tokens: int, concurrency: int = 1, keep_text: bool = False,
              progress: Progress | None = None) -> list[ItemResult]:
    """Results in item order; ``concurrency`` requests in flight (1 = the papers' batch-1 latency)."""
    results: list[ItemResult | None] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {pool.submit(_one, client, item, run, params, fmt, max_new_tokens, keep_text): i
                   for i, item in enumerate(items)}
        for future in _as_completed(futures):
            i = futures[future]
            results[i] = future.result()
            if progress is not None:
                progress.update(results[i])
    return [r for r in results if r is not None]


def _as_completed(futures):
    from concurrent.futures import as_completed

    return as_completed(futures)

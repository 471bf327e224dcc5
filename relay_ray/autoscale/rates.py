"""Sliding-window rates (events per second) with an injected clock; no I/O."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class SlidingRate:
    """Sum of recorded amounts over the last ``window_s`` seconds, per second."""

    def __init__(self, window_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        if window_s <= 0:
            raise ValueError("window_s must be > 0")
        self.window_s = window_s
        self._clock = clock
        self._events: deque[tuple[float, float]] = deque()
        self._total = 0.0

    def add(self, amount: float = 1.0) -> None:
        now = self._clock()
        self._events.append((now, amount))
        self._total += amount
        self._expire(now)

    def per_second(self) -> float:
        self._expire(self._clock())
        return self._total / self.window_s

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        while self._events and self._events[0][0] < horizon:
            self._total -= self._events.popleft()[1]

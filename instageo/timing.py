"""Throughput measured side by side: several runners timed in alternation on one batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from statistics import median


def throughputs(runners: Sequence[Callable], batch, size: int, rounds: int = 5) -> list[float]:
    """Items/s of each runner on ``batch`` (``size`` items), timed in alternation, median of
    ``rounds``: on a noisy machine the ratios between runners hold even if the levels drift."""
    for runner in runners:
        runner(batch)  # warm-up
    seconds: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for index, runner in enumerate(runners):
            started = time.perf_counter()
            runner(batch)
            seconds[index].append(time.perf_counter() - started)
    return [round(size / median(times), 2) for times in seconds]

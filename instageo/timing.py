"""Throughput measured side by side: several runners timed in alternation on one batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from statistics import median


def measure(runners: Sequence[Callable], batch, size: int, rounds: int = 7,
            least_seconds: float = 0.0) -> list[dict[str, float]]:
    """Items/s of each runner on ``batch`` (``size`` items), timed in alternation over
    ``rounds``: the median and the slowest and fastest round. On a noisy machine the ratios
    between runners hold even if the levels drift. With ``least_seconds``, each round calls a
    runner as many times as its warm-up says fill that long (short calls are mostly noise)."""
    calls = []
    for runner in runners:
        started = time.perf_counter()
        runner(batch)  # warm-up
        once = time.perf_counter() - started
        calls.append(max(1, round(least_seconds / once)) if least_seconds and once > 0 else 1)
    seconds: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        for index, runner in enumerate(runners):
            started = time.perf_counter()
            for _ in range(calls[index]):
                runner(batch)
            seconds[index].append((time.perf_counter() - started) / calls[index])
    return [{"median": round(size / median(times), 2), "min": round(size / max(times), 2),
             "max": round(size / min(times), 2)} for times in seconds]


def throughputs(runners: Sequence[Callable], batch, size: int, rounds: int = 5) -> list[float]:
    """The median items/s of each runner (see ``measure``)."""
    return [m["median"] for m in measure(runners, batch, size, rounds)]

"""Throughput measured side by side: several runners timed in alternation on one batch.

One protocol for every runtime, so two identical networks time the same: each runner is
warmed up until its calls settle (first calls pay for allocation, kernel choice and caches),
every round calls each runner as many times as fill ``least_seconds``, and the order of the
runners is shuffled every round (a fixed order gave the runner after the slowest one a
warmer or colder machine every time: a bias, not noise), with a pause before each runner
(SETTLE_SECONDS). The median round is reported.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from statistics import median

WARMUP_CALLS = 3  # at least; more until least_seconds have been spent warming up
# A pause before each timed runner: the worker threads of the runtime that ran before (ONNX
# Runtime's and PyTorch's OpenMP pools spin-wait after a call) go to sleep first instead of
# taking cores from the runner being timed (an identical network timed 0.84x without it).
SETTLE_SECONDS = 0.05


def measure(runners: Sequence[Callable], batch, size: int, rounds: int = 7,
            least_seconds: float = 0.0, seed: int = 0) -> list[dict[str, float]]:
    """Items/s of each runner on ``batch`` (``size`` items), timed in alternation over
    ``rounds`` in a shuffled order (``seed``): the median and the slowest and fastest round.
    On a noisy machine the ratios between runners hold even if the levels drift. With
    ``least_seconds``, each round calls a runner as many times as its warm-up says fill that
    long (short calls are mostly noise)."""
    return [summary(times, size) for times in round_seconds(runners, batch, rounds, least_seconds, seed)]


def round_seconds(runners: Sequence[Callable], batch, rounds: int = 7, least_seconds: float = 0.0,
                  seed: int = 0) -> list[list[float]]:
    """Seconds per call of each runner in each round (see ``measure``)."""
    calls = [_warm_up(runner, batch, least_seconds) for runner in runners]
    order = list(range(len(runners)))
    shuffle = random.Random(seed).shuffle
    seconds: list[list[float]] = [[] for _ in runners]
    for _ in range(rounds):
        shuffle(order)
        for index in order:
            time.sleep(SETTLE_SECONDS)
            started = time.perf_counter()
            for _ in range(calls[index]):
                runners[index](batch)
            seconds[index].append((time.perf_counter() - started) / calls[index])
    return seconds


def summary(times: list[float], size: int) -> dict[str, float]:
    """Items/s: the median round, the slowest and the fastest."""
    return {"median": round(size / median(times), 2), "min": round(size / max(times), 2),
            "max": round(size / min(times), 2)}


def paired_speedup(mine: list[float], base: list[float]) -> float:
    """How many times faster ``mine`` ran than ``base``: the median over rounds of the two
    runs' ratio within each round, so a round slowed by the machine slows both and cancels."""
    return round(median(b / m for m, b in zip(mine, base)), 3)


def _warm_up(runner: Callable, batch, least_seconds: float) -> int:
    """Call ``runner`` at least WARMUP_CALLS times and for ``least_seconds``; the calls per
    round that fill ``least_seconds``, from the last (settled) call's time."""
    spent, calls = 0.0, 0
    while calls < WARMUP_CALLS or spent < least_seconds:
        started = time.perf_counter()
        runner(batch)
        once = time.perf_counter() - started
        spent, calls = spent + once, calls + 1
    return max(1, round(least_seconds / once)) if least_seconds and once > 0 else 1


def throughputs(runners: Sequence[Callable], batch, size: int, rounds: int = 5) -> list[float]:
    """The median items/s of each runner (see ``measure``)."""
    return [m["median"] for m in measure(runners, batch, size, rounds)]

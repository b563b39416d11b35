"""Progress: bars with an ETA from the work done on a terminal; log lines elsewhere.

The stages bar counts stages and shows no ETA (stages differ in length by 1000x: an ETA from
them said 9 s through a 155 s teacher). Item bars (chips, tiles, training batches) show an
ETA from their own items, and a note (the epoch's loss and validation score). Without a
terminal (CI, pipes, nohup) an item bar logs a line now and then instead, once it has run
for a few seconds, so a long stage is never silent.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger("instageo")

QUIET_SECONDS = 5.0  # without a terminal, work shorter than this prints no progress lines
EVERY_FRACTION = 0.1  # then a line each time another tenth of the items is done


class Progress:
    """Stage-level and item-level bars. Disabled when stderr is not a terminal (CI, pipes)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars = None
        self.console = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn,
            )

            self.console = Console(stderr=True)
            self._bars = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), _eta_column(), TextColumn("{task.fields[note]}"),
                console=self.console, transient=False,
            )

    def __enter__(self) -> Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add(self, description: str, total: int | None, eta: bool = True) -> int | None:
        if self._bars is None:
            return None
        return self._bars.add_task(description, total=total, note="", eta=eta)

    def advance(self, task: int | None, steps: int = 1) -> None:
        if self._bars is not None and task is not None:
            self._bars.advance(task, steps)

    def note(self, task: int | None, text: str) -> None:
        if self._bars is not None and task is not None:
            self._bars.update(task, note=text)

    def done(self, task: int | None) -> None:
        if self._bars is not None and task is not None:
            self._bars.remove_task(task)

    def bar(self, description: str, total: int | None) -> Bar:
        """An item bar; advance it with ``step``, end it with ``close`` (or use it as a context)."""
        return Bar(self, description, total)

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """``items`` with an item bar, a step per item."""
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        with self.bar(description, total) as bar:
            for item in items:
                yield item
                bar.step()


class Bar:
    """One item bar: its count, ETA and note; without a terminal, an occasional log line."""

    def __init__(self, progress: Progress, description: str, total: int | None):
        self.progress, self.description, self.total = progress, description, total
        self._task = progress.add(f"  {description}", total)
        self._done, self._started, self._logged = 0, time.monotonic(), 0.0

    def __enter__(self) -> Bar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def step(self, count: int = 1) -> None:
        """``count`` more units of work done (items, or training batches)."""
        self._done += count
        self.progress.advance(self._task, count)
        if not self.progress.enabled:
            self._log_line()

    def note(self, text: str) -> None:
        """Text beside the bar (for training: the last epoch's loss and validation score)."""
        self.progress.note(self._task, text)

    def close(self) -> None:
        self.progress.done(self._task)
        self._task = None

    def _log_line(self) -> None:
        elapsed = time.monotonic() - self._started
        if not self.total or elapsed < QUIET_SECONDS:
            return
        fraction = self._done / self.total
        if fraction - self._logged < EVERY_FRACTION and self._done < self.total:
            return
        self._logged = fraction
        remaining = elapsed / max(fraction, 1e-9) * (1 - fraction)
        log.info("  %s: %d/%d (%d%%), %s elapsed, ETA %s", self.description, self._done, self.total,
                 round(100 * fraction), _clock(elapsed), _clock(remaining))


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _eta_column():
    """'ETA 0:01:10' for item bars, nothing for the stages bar."""
    from rich.progress import TimeRemainingColumn
    from rich.text import Text

    class Remaining(TimeRemainingColumn):
        def render(self, task):
            return Text("ETA ") + super().render(task) if task.fields.get("eta", True) else Text("")

    return Remaining()

"""Progress bars with ETA on a terminal; silence (and plain log lines) elsewhere."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


class Progress:
    """Stage-level and item-level bars. Disabled when stderr is not a terminal (CI, pipes)."""

    def __init__(self, enabled: bool | None = None):
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bars = None
        self.console = None
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn,
                TimeElapsedColumn, TimeRemainingColumn,
            )

            self.console = Console(stderr=True)
            self._bars = RichProgress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=self.console, transient=False,
            )

    def __enter__(self) -> Progress:
        if self._bars is not None:
            self._bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._bars is not None:
            self._bars.stop()

    def add(self, description: str, total: int | None) -> int | None:
        return self._bars.add_task(description, total=total) if self._bars else None

    def advance(self, task: int | None, steps: int = 1) -> None:
        if self._bars is not None and task is not None:
            self._bars.advance(task, steps)

    def done(self, task: int | None) -> None:
        if self._bars is not None and task is not None:
            self._bars.remove_task(task)

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
        task = self.add(f"  {description}", total)
        try:
            for item in items:
                yield item
                self.advance(task)
        finally:
            self.done(task)

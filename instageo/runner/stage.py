"""What a stage is, what it receives and what it returns.

A stage is a pure function of (its recipe sections, its upstream stages' outputs). Stages
never import each other; the runner hands each one its inputs as ``StageResult`` objects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from instageo.progress import Bar
    from instageo.recipe.models import Recipe

T = TypeVar("T")

# Where a stage's summary goes in report.json: a top-level section, each variant's entry, or
# the top level itself (for paths such as "prediction" and "viewer").
ReportSection = Literal["dataset", "teacher", "variant", "run"]


@dataclass(frozen=True)
class StageOutput:
    """What a stage's ``run`` returns: files it wrote (relative to its folder) and a summary."""

    files: dict[str, str] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageResult:
    """A completed stage as its downstream stages see it."""

    name: str
    key: str
    dir: Path
    files: dict[str, str]
    summary: dict[str, Any]

    def path(self, name: str) -> Path:
        return self.dir / self.files[name]


class StageContext:
    """Where a stage writes, how it logs and how it reports item-level progress."""

    def __init__(self, workdir: Path, run_dir: Path, log: logging.Logger, progress,
                 variants: tuple[str, ...], key: str, forced: bool = False):
        self.workdir = workdir  # the stage's partial folder; kept across a kill for resuming
        self.run_dir = run_dir
        self.log = log
        self.variants = variants
        self.key = key
        self.forced = forced  # --force: recompute from the sources, ignoring pins such as locks
        self._progress = progress

    def track(self, items: Iterable[T], total: int | None = None, description: str = "") -> Iterator[T]:
        """Iterate ``items`` with a progress bar (with ETA) under the stage's line."""
        return self._progress.track(items, total=total, description=description)

    def bar(self, description: str, total: int | None) -> Bar:
        """A progress bar advanced by hand (``step``), with a note beside it (``note``)."""
        return self._progress.bar(description, total)


StageRun = Callable[["Recipe", dict[str, StageResult], StageContext], StageOutput]
# Called after the stage completed or was found cached, to publish outside the runs folder
# (for example the recipe's lock file).
StageAfter = Callable[["Recipe", StageResult], None]
# How a kind of input file goes into cache keys, when not by its bytes (a catalogue: its items
# and their assets); handed in by the stage that reads it, so the runner knows no product type.
InputDigest = Callable[[Path], str]
# Report hooks of a stage above the runner: files written beside report.json (returning the
# report keys they set), and report.md sections.
ReportFiles = Callable[[dict[str, Any], Path], dict[str, Any]]
ReportMarkdown = Callable[[dict[str, Any]], list[str]]


@dataclass(frozen=True)
class Stage:
    """A step of the pipeline.

    ``sections`` are the dotted recipe fields whose values configure the stage (and so go
    into its cache key); ``needs`` are the stages whose outputs it reads; ``optional`` are
    stages it reads when they are planned. ``when`` says whether a recipe wants the stage at
    all (a stage whose need is not planned is not planned either). A ``gather`` stage runs
    once for the whole sweep and reads its needs from every variant, as inputs named
    ``<need>@<variant>``; nothing may need it. ``ranks``: under ``accelerate launch`` every
    process runs the stage (training, data-parallel), not rank 0 alone. Bump ``version`` when a code change alters the
    stage's outputs, so cached results are recomputed. ``input_digests``: (input file type,
    how its cache key is hashed) pairs; ``report_files`` and ``report_markdown``: what the stage
    adds to the run's report, called when the report is written.
    """

    name: str
    run: StageRun
    sections: tuple[str, ...]
    needs: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    when: Callable[[Recipe], bool] | None = None
    version: str = "1"
    report_into: ReportSection | None = None
    after: StageAfter | None = None
    gather: bool = False
    ranks: bool = False
    input_digests: tuple[tuple[type, InputDigest], ...] = ()
    report_files: ReportFiles | None = None
    report_markdown: ReportMarkdown | None = None

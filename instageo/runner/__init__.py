"""The runner: plan a recipe's stages, then execute what is not cached, then report."""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from instageo.errors import InputError, InstageoError
from instageo.files import remove_temporaries, sha256_file
from instageo.logs import FILE_ONLY
from instageo.progress import Progress
from instageo.redact import RedactingFilter, redact
from instageo.recipe.models import Recipe
from instageo.recipe.sweep import expand
from instageo.runner.cache import RunLock, RunStore
from instageo.runner import ranks
from instageo.runner.execute import StageRecord, execute, follow
from instageo.runner.plan import Decision, Plan, decide, make_plan
from instageo.runner.report import build_report, write_report
from instageo.runner.stage import Stage, StageContext, StageOutput, StageResult

__all__ = [
    "Stage", "StageContext", "StageOutput", "StageResult", "plan_recipe", "run_recipe",
]

log = logging.getLogger("instageo")


def plan_recipe(recipe: Recipe, pipeline: Sequence[Stage], runs_dir: Path,
                until: str | None = None, force: Sequence[str] = ()) -> tuple[Plan, list[Decision]]:
    """The plan of a recipe and, per stage, whether it is cached or why it runs."""
    _check_force(pipeline, force)
    digests = tuple(pair for stage in pipeline for pair in stage.input_digests)
    plan = make_plan(expand(recipe), pipeline, functools.cache(functools.partial(input_digest, digests=digests)),
                     until)
    return plan, decide(plan, RunStore(Path(runs_dir).resolve() / recipe.name), force)


def run_recipe(recipe: Recipe, pipeline: Sequence[Stage], runs_dir: Path,
               until: str | None = None, force: Sequence[str] = (),
               progress: Progress | None = None, publish: bool = True) -> dict[str, Any]:
    """Run every stage that is not cached; write report.json/md; return the report.
    ``publish=False`` leaves files outside the runs folder (the lock file) untouched."""
    run_dir = Path(runs_dir).resolve() / recipe.name  # stages see absolute paths
    if not ranks.is_main():  # another process of `accelerate launch`: rank 0 runs the run
        ranks.sync()
        follow(plan_recipe(recipe, pipeline, runs_dir, until, force)[1], RunStore(run_dir))
        ranks.sync()  # rank 0 has written the report
        return json.loads((run_dir / "report.json").read_text())
    progress = progress or Progress(enabled=False)
    with RunLock(run_dir), _run_log(run_dir) as log_file:
        beside_recipe = (remove_temporaries(recipe.path.parent, False, f".{recipe.name}.lock.json.tmp-*")
                         if recipe.path else [])  # the lock's only: that folder is the user's
        for leftover in remove_temporaries(run_dir, recursive=False) + beside_recipe:
            log.debug("removed %s, left by an interrupted run", leftover)
        plan, decisions = plan_recipe(recipe, pipeline, runs_dir, until, force)
        ranks.sync()  # the other processes plan now: the same cache, the same decisions
        records: list[StageRecord] = []
        try:
            with progress:
                execute(decisions, RunStore(run_dir), progress, publish, records)
        except (Exception, KeyboardInterrupt) as exc:
            _report_failure(exc, plan, decisions, records, run_dir, log_file, pipeline)
            raise
        report = build_report(plan, records, run_dir, "ok")
        write_report(report, run_dir, pipeline)
        ranks.sync()
        return report


def _report_failure(exc: BaseException, plan: Plan, decisions: list[Decision], records: list[StageRecord],
                    run_dir: Path, log_file: Path, pipeline: Sequence[Stage]) -> None:
    """The trail of a run that did not finish: the error and its traceback in the run's log
    (never on the console: the command line prints one line), and a report listing the
    stages that finished, the one that failed, its error and where the traceback is."""
    interrupted = isinstance(exc, KeyboardInterrupt)
    failing = decisions[len(records)].planned if len(records) < len(decisions) else None
    where = f"stage {failing.name} [{', '.join(failing.variants)}]" if failing else "the run"
    if interrupted:
        error = "interrupted (Ctrl-C); rerun to resume"
    else:  # our errors say what went wrong; anything else is named by its type
        error = redact(str(exc) if isinstance(exc, InstageoError) else f"{type(exc).__name__}: {exc}")
    log.error("%s: %s", where, error, exc_info=not interrupted, extra={FILE_ONLY: True})
    failure = {"stage": failing and failing.name, "variants": failing and failing.variants, "error": error,
               "log": str(log_file.relative_to(run_dir))}
    try:
        write_report(build_report(plan, records, run_dir, "interrupted" if interrupted else "failed",
                                  error, failure), run_dir, pipeline)
    except OSError as failed:  # e.g. the disk is full: the run's own error is the news
        log.warning("could not write the report of the failed run: %s", failed)


def input_digest(path: Path, digests: Sequence[tuple[type, Callable[[Path], str]]] = ()) -> str:
    """What a cache key holds for an input file: its content, or, for a kind of file that
    stands for more (a catalogue), what the stage reading it says (``Stage.input_digests``)."""
    digest = next((hasher for kind, hasher in digests if isinstance(path, kind)), sha256_file)
    return digest(path)


def _check_force(pipeline: Sequence[Stage], force: Sequence[str]) -> None:
    names = [stage.name for stage in pipeline]
    for name in force:
        if name not in names:
            raise InputError(f"--force {name}: no such stage, should be one of {names}")


class _RunLogHandler(logging.FileHandler):
    """The run's log file. When it cannot be written (a full disk) it stops, quietly: logging's
    default would print a traceback on the console for every line."""

    broken = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.broken:
            super().emit(record)

    def handleError(self, record: logging.LogRecord) -> None:
        self.broken = True

    def close(self) -> None:
        try:  # the last flush can hit the full disk too; the run's own error is the news
            super().close()
        except OSError:
            self.broken = True


class _run_log:
    """Log the run to runs/<recipe>/logs/<time>.log: instageo at DEBUG level, and the warnings
    of the libraries (their loggers and Python warnings), which the console never shows: the
    user cannot act on them. Attached to the root logger, so that a library calling
    ``logging.warning`` finds a handler and does not install its own on the console (which
    printed a stray warning, then every line twice)."""

    def __init__(self, run_dir: Path):
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        self.path = run_dir / "logs" / f"{stamp}.log"
        self.handler = _RunLogHandler(self.path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.handler.setLevel(logging.DEBUG)
        self.handler.addFilter(RedactingFilter())

    def __enter__(self) -> Path:
        logging.getLogger().addHandler(self.handler)
        log.setLevel(logging.DEBUG)
        logging.captureWarnings(True)
        return self.path

    def __exit__(self, *exc):
        logging.captureWarnings(False)
        logging.getLogger().removeHandler(self.handler)
        self.handler.close()

"""Run a plan: skip cached stages, run the others into partial folders, commit each."""

from __future__ import annotations

import datetime as dt
import errno
import logging
import shutil
import time
from dataclasses import dataclass

from instageo import __version__
from instageo.runner import ranks
from instageo.errors import DiskFullError, InstageoError, StageError, disk_full, disk_full_message, not_writable_message
from instageo.progress import Progress
from instageo.runner.cache import Manifest, RunStore
from instageo.runner.plan import Decision
from instageo.runner.stage import StageContext, StageOutput, StageResult

log = logging.getLogger("instageo")


@dataclass
class StageRecord:
    decision: Decision
    result: StageResult
    seconds: float


def execute(decisions: list[Decision], store: RunStore, progress: Progress,
            publish: bool = True, records: list[StageRecord] | None = None) -> list[StageRecord]:
    """Run the decided stages in order; returns one record per stage (cached ones included),
    appended to ``records`` as each finishes, so that a failure leaves the finished ones there
    (the failing stage is ``decisions[len(records)]``). ``publish=False`` skips the stages'
    ``after`` hooks (nothing written outside the run)."""
    results: dict[str, StageResult] = {}
    records = [] if records is None else records
    overall = progress.add("stages", len(decisions), eta=False)
    for decision in decisions:
        planned = decision.planned
        label = _label(planned.name, planned.variants)
        if decision.cached:
            manifest, _ = store.lookup(planned.name, planned.key)
            result, seconds = store.result(manifest), 0.0
            log.info("%s: cached (%s)", label, planned.key[:12])
        else:
            log.info("%s: running (%s)", label, decision.reason)
            if planned.stage.ranks:
                ranks.sync()  # the other processes (accelerate launch) train with this one
            started = time.perf_counter()
            result = _run_stage(decision, results, store, progress)
            seconds = time.perf_counter() - started
            log.info("%s: done in %.1fs", label, seconds)
            ranks.sync()  # committed: the other processes may read it
        store.record_latest(planned.name, planned.variants, planned.key)
        if publish and planned.stage.after is not None:
            planned.stage.after(planned.recipe, result)
        results[planned.key] = result
        records.append(StageRecord(decision, result, seconds))
        progress.advance(overall)
    progress.done(overall)
    return records


def follow(decisions: list[Decision], store: RunStore) -> None:
    """A rank other than 0 (see ``ranks``): train with rank 0 in the stages that train, wait
    for it in the others, and read every stage's result from what rank 0 committed."""
    results: dict[str, StageResult] = {}
    for decision in decisions:
        planned = decision.planned
        if not decision.cached:
            if planned.stage.ranks:
                ranks.sync()
                context = _context(decision, store.partial_dir(planned.name, planned.key), store,
                                   Progress(enabled=False))
                planned.stage.run(planned.recipe, {n: results[k] for n, k in planned.inputs.items()}, context)
            ranks.sync()
        manifest, _ = store.lookup(planned.name, planned.key)
        results[planned.key] = store.result(manifest)


def _context(decision: Decision, workdir, store: RunStore, progress) -> StageContext:
    planned = decision.planned
    return StageContext(workdir, store.run_dir, log.getChild(planned.name), progress, tuple(planned.variants),
                        planned.key, forced=decision.reason == "forced")


def _run_stage(decision: Decision, results, store: RunStore, progress: Progress) -> StageResult:
    planned = decision.planned
    started_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    workdir = store.begin(planned.name, planned.key)
    inputs = {name: results[key] for name, key in planned.inputs.items()}
    context = _context(decision, workdir, store, progress)
    try:
        output = planned.stage.run(planned.recipe, inputs, context)
        if not isinstance(output, StageOutput):
            raise StageError(f"stage {planned.name} returned {type(output).__name__}, not StageOutput")
        manifest = Manifest(
            stage=planned.name, key=planned.key, version=planned.stage.version,
            config=planned.config, inputs=planned.inputs, files=output.files,
            summary=output.summary, variants=planned.variants, started=started_at,
            seconds=round(time.perf_counter() - started, 3), instageo_version=__version__,
        )
        folder = store.commit(manifest)
    except Exception as exc:
        full = disk_full(exc)
        if full is not None:  # whatever the library made of it (torch, GDAL wrap OSErrors)
            raise DiskFullError(f"stage {planned.name}: {disk_full_message(full, store.stages_dir)}") from exc
        if isinstance(exc, InstageoError):
            raise
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise StageError(f"stage {planned.name}: {not_writable_message(exc)}") from exc
        free = _free_bytes(store.stages_dir)
        if free is not None and free < LOW_SPACE:  # GDAL reports a failed write without errno
            why = OSError(errno.ENOSPC, f"{free} bytes free after {type(exc).__name__}: {exc}")
            raise DiskFullError(f"stage {planned.name}: {disk_full_message(why, store.stages_dir)}") from exc
        raise StageError(f"stage {planned.name} failed: {type(exc).__name__}: {exc}") from exc
    return StageResult(planned.name, planned.key, folder, output.files, output.summary)


LOW_SPACE = 1 << 20  # bytes: a stage that fails with less than this free most likely ran out


def _free_bytes(folder) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _label(name: str, variants: list[str]) -> str:
    if len(variants) == 1 and variants[0] != "default":
        return f"{name} [{variants[0]}]"
    return name

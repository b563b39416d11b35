"""Prediction jobs of `instarun serve`: a bundle over an area and date, in the background.

One job runs at a time per served run (a prediction already uses every core); others wait in
order and can be cancelled, queued or running. A job runs `instarun predict`'s own code
(`standalone.predict_bundle`), so its COGs are the bytes the predict stage writes for that
area and date. Results are content-keyed: the same model, area, date and catalogue make the
same key, and a key already on disk is served without running again. They live in
``<run>/app/<key>/``, written through a temporary folder, so a crash or a cancel leaves
nothing half-written.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field, fields
from pathlib import Path

from instageo.engine import Cancelled
from instageo.errors import InputError, InstageoError
from instageo.files import sha256_file, write_json_atomic

log = logging.getLogger("instageo.serve")
APP_FOLDER = "app"  # inside the run folder
MAX_QUEUED = 8
# serve's default tile budget: what the chosen model predicts in about this long at half its
# measured ONNX speed (a whole job also reads, blends and writes: 0.4-0.56 of the model alone
# on this machine, bench/RESULTS.md), or DEFAULT_MAX_TILES when the run has not timed it
JOB_SECONDS = 300
DEFAULT_MAX_TILES = 5_000
_scene_lock = threading.Lock()


@dataclass
class Job:
    id: str
    key: str
    model: str  # the model's name in the app's list ("student depth 2", "teacher")
    bundle: str  # the bundle folder, relative to the run folder
    bbox: tuple[float, float, float, float]
    date: str
    catalog: str | None  # a local catalog.json to read instead of the bundle's own source
    state: str = "queued"  # queued, running, cancelling, done, failed, cancelled
    done: int = 0
    total: int | None = None
    started: float | None = None
    eta_seconds: float | None = None
    error: str | None = None
    result: str | None = None  # the prediction folder, relative to the run folder
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    def public(self) -> dict:
        """What the page sees."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "cancel"}


def source_dir(run_dir: Path, bundle: dict) -> Path:
    """Where the app keeps a demo bundle's scene (one per source: seed, size, ...), so the
    inputs of a job's items can be read again when a point is inspected."""
    digest = hashlib.sha256(json.dumps(bundle["source"], sort_keys=True).encode()).hexdigest()[:12]
    return run_dir / APP_FOLDER / f".source-{digest}"


def demo_source(run_dir: Path, bundle: dict) -> Path:
    """source_dir, with a demo bundle's scene generated there once (into a temporary folder
    moved into place, so concurrent requests never read half a scene)."""
    folder = source_dir(run_dir, bundle)
    if bundle["source"]["kind"] != "demo":
        return folder
    with _scene_lock:
        if not (folder / "scene" / "catalog.json").is_file():
            import shutil
            import tempfile

            from instageo.data.search import demo_scene

            folder.parent.mkdir(parents=True, exist_ok=True)
            partial = Path(tempfile.mkdtemp(prefix=".partial-source-", dir=folder.parent))
            try:
                demo_scene(spec_for(bundle, None).source, partial)
                shutil.rmtree(folder, ignore_errors=True)  # a scene left incomplete by a crash
                partial.rename(folder)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
    return folder


def spec_for(bundle: dict, catalog: Path | None):
    """The tile spec `instarun predict` makes of a bundle (the predict stage's defaults),
    reading ``catalog`` instead of the bundle's source when given."""
    from instageo.deploy.standalone import source_for
    from instageo.engine.tiling import TileSpec
    from instageo.recipe.defaults import PREDICT_BATCH_SIZE, PREDICT_OVERLAP

    return TileSpec.of_bundle(bundle, source_for(bundle, catalog, None, None), PREDICT_OVERLAP, PREDICT_BATCH_SIZE)


def tile_budget(max_tiles: int | None, model: dict) -> tuple[int, str]:
    """The most tiles a job of ``model`` (run_files.models_of's entry) may predict, and why."""
    if max_tiles:
        return max_tiles, "its --max-tiles"
    speed = model.get("chips_per_s")
    if not speed:
        return DEFAULT_MAX_TILES, "its default --max-tiles"
    tiles = max(int(JOB_SECONDS * speed / 2), 64)
    return tiles, f"about {JOB_SECONDS // 60} minutes of {model['name']} at its measured {speed:,.0f} chips/s"


def size_job(run_dir: Path, bundle_dir: Path, bundle: dict, bbox, date: dt.date, catalog: Path | None,
             budget: tuple[int, str]) -> int:
    """The tiles a job would predict, after checking it is worth starting: at most the
    budget's tiles, and at least one scene of the catalogue over the area at that date.
    Else InputError, naming what the app's user can change."""
    from instageo.data.catalogue import LocalCatalogue
    from instageo.data.grid import union_boxes
    from instageo.data.search import open_catalogue, search_area
    from instageo.engine.tiling import Area, check_area_size

    spec = spec_for(bundle, catalog)
    tiles = check_area_size(spec, Area("area", tuple(bbox), None, "the drawn area"), len(bundle["classes"]),
                            fix="draw a smaller area")
    limit, why = budget
    if tiles > limit:
        raise InputError(f"the drawn area needs {tiles:,} tiles, more than this server takes per job ({limit:,}, "
                         f"{why}); draw a smaller area, or start instarun serve with a larger --max-tiles")
    catalogue = open_catalogue(spec.source, demo_source(run_dir, bundle))
    if not search_area(catalogue, tuple(bbox), date, spec.source, spec.chips):
        tolerance = spec.chips.time.tolerance_days
        extent = ""
        if isinstance(catalogue, LocalCatalogue) and catalogue.items:
            west, south, east, north = union_boxes(tuple(item["bbox"]) for item in catalogue.items)
            extent = f" (its scenes lie within {west:.4f}, {south:.4f}, {east:.4f}, {north:.4f})"
        raise InputError(f"{catalogue.name} has no scene over the drawn area within {tolerance} day(s) of {date}"
                         f"{extent}; draw the area over a scene, or pick another date or catalogue")
    return tiles


def job_key(bundle_dir: Path, bbox, date: str, catalog: str | None) -> str:
    """The same model file, area, date and catalogue: the same prediction."""
    from instageo.engine.bundle import read_bundle

    bundle = read_bundle(bundle_dir)
    model = sha256_file(bundle_dir / bundle["model"])
    text = json.dumps({"model": model, "bbox": [round(float(v), 7) for v in bbox], "date": date,
                       "catalog": catalog}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def tile_counter(job: Job):
    """A progress tracker that counts a job's tiles (and its ETA) for the page."""

    def track(items, total=None, description=""):
        counting = description == "tiles"
        if counting:
            job.total, job.done = total, 0
        for item in items:
            yield item
            if counting:
                job.done += 1
                if total:
                    elapsed = time.monotonic() - job.started
                    job.eta_seconds = round(elapsed / job.done * (total - job.done), 1)

    return track


class JobQueue:
    """The jobs of one served run, run one at a time on a background thread."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir
        self.jobs: dict[str, Job] = {}
        self.waiting: deque[str] = deque()
        self.lock = threading.Condition()
        self.closed = False
        self.worker = threading.Thread(target=self._work, name="instageo-jobs", daemon=True)
        self.worker.start()

    def submit(self, model: str, bundle_dir: Path, bbox, date: dt.date, catalog: Path | None) -> Job:
        key = job_key(bundle_dir, bbox, date.isoformat(), str(catalog) if catalog else None)
        job = Job(uuid.uuid4().hex[:12], key, model, str(bundle_dir.relative_to(self.run_dir)), tuple(bbox),
                  date.isoformat(), str(catalog) if catalog else None)
        with self.lock:
            if (self.run_dir / APP_FOLDER / key / "job.json").is_file():  # done before
                job.state, job.result = "done", f"{APP_FOLDER}/{key}"
            else:
                if len(self.waiting) >= MAX_QUEUED:
                    raise InstageoError(f"{MAX_QUEUED} jobs are waiting already; wait for one or cancel one")
                self.waiting.append(job.id)
            self.jobs[job.id] = job
            self.lock.notify_all()
        return job

    def finished(self, key: str = "*") -> list[dict]:
        """The jobs done so far, by this server or an earlier one (their job.json); ``key``:
        only that one."""
        if key != "*" and not key.isalnum():  # keys are hex digests: anything else names no job
            return []
        found = []
        for path in sorted((self.run_dir / APP_FOLDER).glob(f"{key}/job.json")):
            try:
                job = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # a damaged record: its folder is not listed
            if (path.parent / "prediction.tif").is_file():
                found.append({**job, "result": f"{APP_FOLDER}/{path.parent.name}"})
        return found

    def cancel(self, job_id: str) -> Job:
        """A queued job is cancelled at once; a running one is "cancelling" until it stops at
        its next tile, then "cancelled"."""
        with self.lock:
            job = self.jobs[job_id]
            if job.state == "queued":
                self.waiting.remove(job_id)
                job.state = "cancelled"
            elif job.state == "running":
                job.state = "cancelling"
            job.cancel.set()
            return job

    def close(self) -> None:
        with self.lock:
            self.closed = True
            for job in self.jobs.values():
                job.cancel.set()
            self.lock.notify_all()
        self.worker.join(timeout=30)

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self.waiting and not self.closed:
                    self.lock.wait()
                if self.closed:
                    return
                job = self.jobs[self.waiting.popleft()]
                job.state, job.started = "running", time.monotonic()
            self._run(job)

    def _run(self, job: Job) -> None:
        """Predict into a temporary folder, renamed to app/<key> with its job.json once done:
        a failed or cancelled job leaves only its record (in memory), no folder."""
        import shutil
        import tempfile

        from instageo.deploy.standalone import predict_bundle
        from instageo.engine.bundle import read_bundle

        out = self.run_dir / APP_FOLDER / job.key
        if (out / "job.json").is_file():  # the same job ran while this one waited
            job.state, job.result = "done", f"{APP_FOLDER}/{job.key}"
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".partial-{job.key}-", dir=out.parent))
        try:
            bundle_dir = self.run_dir / job.bundle
            summary = predict_bundle(bundle_dir, job.bbox, dt.date.fromisoformat(job.date), partial,
                                     tile_counter(job),
                                     Path(job.catalog) if job.catalog else None,
                                     source_dir=demo_source(self.run_dir, read_bundle(bundle_dir)), cancel=job.cancel)
            write_json_atomic(partial / "job.json", {**job.public(), "state": "done", "tiles": summary["tiles"],
                                                     "result": f"{APP_FOLDER}/{job.key}"})
            shutil.rmtree(out, ignore_errors=True)  # a folder without job.json: left by a crash
            partial.rename(out)
            job.state, job.result = "done", f"{APP_FOLDER}/{job.key}"
        except Cancelled:
            job.state = "cancelled"
        except InstageoError as exc:  # a user's mistake or a data problem: one line for the page
            job.state, job.error = "failed", str(exc).splitlines()[0]
        except Exception as exc:  # a bug: the line for the page, the traceback for the log
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        finally:
            shutil.rmtree(partial, ignore_errors=True)

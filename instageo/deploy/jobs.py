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

from instageo.errors import InstageoError
from instageo.files import sha256_file, write_json_atomic
from instageo.progress import Progress

log = logging.getLogger("instageo.serve")
APP_FOLDER = "app"  # inside the run folder
MAX_QUEUED = 8


class Cancelled(Exception):
    pass


@dataclass
class Job:
    id: str
    key: str
    model: str  # the model's name in the app's list ("student depth 2", "teacher")
    bundle: str  # the bundle folder, relative to the run folder
    bbox: tuple[float, float, float, float]
    date: str
    catalog: str | None  # a local catalog.json to read instead of the bundle's own source
    state: str = "queued"  # queued, running, done, failed, cancelled
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


def job_key(bundle_dir: Path, bbox, date: str, catalog: str | None) -> str:
    """The same model file, area, date and catalogue: the same prediction."""
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    model = sha256_file(bundle_dir / bundle["model"])
    text = json.dumps({"model": model, "bbox": [round(float(v), 7) for v in bbox], "date": date,
                       "catalog": catalog}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class JobProgress(Progress):
    """Counts the tiles of a job for the page, and stops it when it is cancelled."""

    def __init__(self, job: Job):
        super().__init__(enabled=False)
        self.job = job

    def track(self, items, total=None, description=""):
        if total is None and hasattr(items, "__len__"):
            total = len(items)
        if description == "tiles":
            self.job.total, self.job.done = total, 0
        for item in items:
            if self.job.cancel.is_set():
                raise Cancelled()
            yield item
            if description == "tiles":
                self.job.done += 1
                elapsed = time.monotonic() - self.job.started
                if total:
                    self.job.eta_seconds = round(elapsed / self.job.done * (total - self.job.done), 1)


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
        with self.lock:
            job = self.jobs[job_id]
            if job.state == "queued":
                self.waiting.remove(job_id)
                job.state = "cancelled"
            job.cancel.set()  # a running job stops at its next tile
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
        from instageo.deploy.standalone import predict_bundle

        out = self.run_dir / APP_FOLDER / job.key
        if (out / "job.json").is_file():  # the same job ran while this one waited
            job.state, job.result = "done", f"{APP_FOLDER}/{job.key}"
            return
        try:
            bundle_dir = self.run_dir / job.bundle
            summary = predict_bundle(bundle_dir, job.bbox, dt.date.fromisoformat(job.date), out, JobProgress(job),
                                     Path(job.catalog) if job.catalog else None,
                                     source_dir=source_dir(self.run_dir, json.loads((bundle_dir / "bundle.json").read_text())))
            write_json_atomic(out / "job.json", {**job.public(), "state": "done", "tiles": summary["tiles"],
                                                 "result": f"{APP_FOLDER}/{job.key}"})
            job.state, job.result = "done", f"{APP_FOLDER}/{job.key}"
        except Cancelled:
            job.state = "cancelled"
        except InstageoError as exc:  # a user's mistake or a data problem: one line for the page
            job.state, job.error = "failed", str(exc).splitlines()[0]
        except Exception as exc:  # a bug: the line for the page, the traceback for the log
            log.exception("job %s failed", job.id)
            job.state, job.error = "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"

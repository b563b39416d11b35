"""What the map app reads of a run folder: which files it may serve (an allow-list checked on
the resolved path), the run's models, predictions and observations, and values at a point."""

from __future__ import annotations

import functools
import json
from pathlib import Path

LAYERS = ("prediction", "confidence", "rgb")
SERVED = ("report.json", "report.md", "sweep.png", "compare.html", "app/", "viewer/")  # top-level files and folders
SERVED_STAGES = ("viewer-", "predict-", "teacher_predict-")  # stage folders the map reads from
NEVER = (".pt", ".log", ".lock.json")


class NotFound(Exception):
    pass


class Unreadable(Exception):
    """A run file the server should read and cannot (damaged)."""


def servable(relative: str) -> bool:
    """Whether the map needs this run file: the report, viewers, predictions."""
    if relative.endswith(NEVER):
        return False
    parts = relative.split("/")
    if len(parts) >= 2 and parts[0] == "stages":
        return parts[1].startswith(SERVED_STAGES)
    return relative in SERVED or relative.startswith(tuple(f for f in SERVED if f.endswith("/")))


def safe_path(root: Path, relative: str) -> Path:
    """``relative`` inside ``root`` (after resolving symlinks), else NotFound. A name the
    file system refuses (too long, a loop of links) is not found either."""
    if relative.startswith("/") or "\x00" in relative:
        raise NotFound(relative)
    try:
        candidate = (root / relative).resolve()
        if (candidate != root and root not in candidate.parents) or not candidate.is_file():
            raise NotFound(relative)
    except (OSError, RuntimeError, ValueError):  # ENAMETOOLONG, ELOOP, a bad name
        raise NotFound(relative) from None
    return candidate


def served_file(root: Path, relative: str) -> Path:
    """The run file ``relative`` names (as decoded from the URL), if the map needs it, else
    NotFound. The allow-list is checked on the resolved path (``..``, symlinks and encoded
    slashes gone), never on the string asked for: ``stages/predict-x/../export-y/...``
    starts like a prediction and names a bundle."""
    path = safe_path(root, relative)
    if not servable(path.relative_to(root).as_posix()):
        raise NotFound(relative)
    return path


def models_of(root: Path, report: dict) -> list[dict]:
    """Every exported model of the run: the teacher (when exported) and each student, with
    its bundle folder, test mIoU and ONNX speed (chips/s, the speed stage's median)."""
    found = []
    teacher = report.get("teacher") or {}
    if teacher.get("onnx"):
        found.append({"id": "teacher", "name": f"teacher (depth {teacher.get('depth')})", "depth": teacher.get("depth"),
                      "bundle": str(Path(teacher["onnx"]).parent), "miou": (teacher.get("metrics") or {}).get("miou"),
                      "chips_per_s": (teacher.get("throughput") or {}).get("onnx_img_s")})
    for variant in report.get("variants", []):
        if variant.get("onnx"):
            found.append({"id": f"student-{variant['name']}", "depth": variant.get("student_depth"),
                          "name": f"student depth {variant.get('student_depth')} ({variant['name']})",
                          "bundle": str(Path(variant["onnx"]).parent),
                          "miou": (variant.get("metrics") or {}).get("miou"),
                          "chips_per_s": (variant.get("throughput") or {}).get("onnx_img_s")})
    return found


def predictions_of(root: Path, report: dict, jobs: list[dict]) -> list[dict]:
    """The finished predictions: the stages' (each student's, the teacher's) and those of
    ``jobs`` (JobQueue.finished), each with its layers (COG paths relative to the run folder)
    and its date."""
    found = []

    def add(pid: str, name: str, folder: str, area: dict | None, model: str | None) -> None:
        layers = {layer: f"{folder}/{layer}.tif" for layer in LAYERS if (root / folder / f"{layer}.tif").is_file()}
        if "prediction" in layers:
            found.append({"id": pid, "name": name, "layers": layers, "model": model, "version": Path(folder).name,
                          "date": (area or {}).get("date"), "bbox": (area or {}).get("bbox")})

    for variant in report.get("variants", []):
        if variant.get("prediction"):
            add(f"student-{variant['name']}", f"student depth {variant.get('student_depth')} ({variant['name']})",
                str(Path(variant["prediction"]).parent), variant.get("prediction_area"), f"student-{variant['name']}")
    teacher = report.get("teacher") or {}
    if teacher.get("prediction"):
        add("teacher", "teacher", str(Path(teacher["prediction"]).parent), teacher.get("prediction_area"), "teacher")
    for job in jobs:
        add(f"job-{job['key']}", f"{job['model']}, {job['date']}", job["result"],
            {"date": job["date"], "bbox": job["bbox"]}, None)
        if found and found[-1]["id"] == f"job-{job['key']}":
            found[-1].update(bundle=job["bundle"], catalog=job.get("catalog"))
    return found


def inputs_of(root: Path, report: dict, prediction: dict, lon: float, lat: float) -> dict:
    """What the model read at a point of a prediction: each step's date and band values (the
    stage's items from the search stage folder, a job's from its own folder)."""
    import datetime as dt
    import logging

    from instageo.deploy import jobs
    from instageo.engine.bundle import read_bundle
    from instageo.engine.tiling import inputs_at

    stages = {s["name"]: s for s in report.get("stages", [])}
    if not prediction.get("bbox") or not prediction.get("date"):
        return {"reason": "this map does not record its area and date (several areas)"}
    if prediction["id"].startswith("job-"):
        bundle_dir = root / prediction["bundle"]
        items = json.loads((root / Path(prediction["layers"]["prediction"]).parent / "items.json").read_text())
        base = jobs.source_dir(root, read_bundle(bundle_dir))
        catalog = Path(prediction["catalog"]) if prediction.get("catalog") else None
    else:
        models = {m["id"]: m for m in models_of(root, report)}
        if prediction["model"] not in models or "search" not in stages:
            return {"reason": "the model or the search stage of this map is not in the run"}
        bundle_dir = root / models[prediction["model"]]["bundle"]
        base = root / Path(stages["search"]["outputs"]["items"]).parent
        items = json.loads((base / "items.json").read_text())
        fresh = root / Path(prediction["layers"]["prediction"]).parent / "items.json"
        if fresh.is_file():  # the stage searched afresh for its area or date
            items = {**items, **json.loads(fresh.read_text())}
        catalog = run_catalogue(root, report)
    date = dt.date.fromisoformat(prediction["date"])
    spec = _tile_spec(bundle_dir, (bundle_dir / "bundle.json").stat().st_mtime_ns, catalog)
    return inputs_at(spec, items, base, date, lon, lat, logging.getLogger("instageo.serve"))


@functools.lru_cache(maxsize=32)
def _tile_spec(bundle_dir: Path, modified: int, catalog: Path | None):
    """A bundle's tile spec, made once per bundle file (``modified``: its mtime, so a
    re-exported bundle is read again), not on every click of the map."""
    from instageo.deploy import jobs
    from instageo.engine.bundle import read_bundle

    return jobs.spec_for(read_bundle(bundle_dir), catalog)


def observations_of(root: Path, report: dict) -> dict:
    """The run's observations as GeoJSON points: id, date, label (the class name) and split."""
    import csv

    stages = {s["name"]: s["outputs"] for s in report.get("stages", [])}
    if "chips" not in stages or "search" not in stages:
        return {"type": "FeatureCollection", "features": []}
    classes = (report.get("task") or {}).get("classes", [])
    labels = {}
    with open(root / stages["search"]["observations"], newline="") as handle:
        for row in csv.DictReader(handle):
            labels[row["id"]] = row.get("label")
    features = []
    with open(root / stages["chips"]["index"], newline="") as handle:
        for row in csv.DictReader(handle):
            label = labels.get(row["observation"])
            name = classes[int(float(label))] if label not in (None, "") and float(label).is_integer() \
                and 0 <= int(float(label)) < len(classes) else label
            features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(row["lon"]), float(row["lat"])]},
                             "properties": {"id": row["observation"], "date": row["date"], "split": row.get("split") or "",
                                            "label": name}})
    return {"type": "FeatureCollection", "features": features}


def point_values(root: Path, prediction: dict, classes: list[str], lon: float, lat: float) -> dict:
    """Class, confidence and input colour of one prediction at a lon/lat point."""
    import rasterio
    from rasterio.warp import transform

    found: dict = {"lon": lon, "lat": lat}
    for layer, path in prediction["layers"].items():
        with rasterio.open(root / path) as dataset:
            (x,), (y,) = transform("EPSG:4326", dataset.crs, [lon], [lat])
            row, column = dataset.index(x, y)
            if not (0 <= row < dataset.height and 0 <= column < dataset.width):
                return {**found, "outside": True}
            values = dataset.read(window=((row, row + 1), (column, column + 1)))[:, 0, 0]
        if layer == "prediction":
            value = int(values[0])
            found["class"] = None if value == 255 else classes[value] if value < len(classes) else value
        elif layer == "confidence":
            found["confidence"] = None if values[0] != values[0] else round(float(values[0]), 4)
        else:
            found["rgb"] = [int(v) for v in values]
    return found


def colours_of(root: Path, report: dict) -> list[str]:
    from instageo.data.quicklook import class_colours

    task = report.get("task") or {}
    return class_colours(len(task.get("classes", [])), task.get("colors"))


def run_catalogue(root: Path, report: dict) -> Path | None:
    """The local catalog.json the run's recipe reads (report.json's source)."""
    source = report.get("source") or {}
    return Path(source["path"]) if source.get("kind") == "catalog" and source.get("path") else None

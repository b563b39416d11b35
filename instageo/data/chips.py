"""The `chips` stage: model-ready chips (T, C, H, W) and labels from the search stage's items.

One job per chip (a point observation, or a tile of a label raster), run many at once on
threads (I/O bound: GDAL releases the GIL) or on a dask cluster. Each finished chip leaves a
record, so an interrupted stage resumes where it stopped. Then: split, band statistics and
class weights on the train split, and an index with every file's SHA-256.

Outputs: chips/<id>.tif (T*C float32 bands, NaN nodata, band descriptions t<k>_<band>),
labels/<id>.tif, index.csv, stats.json.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import logging
import math
import queue
import random
import re
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import numpy as np

from instageo.data.chip_build import Candidate, ChipJob, ChipRecord, build_chip
from instageo.data.grid import ChipGrid, centred_grid, centres_lonlat, footprints_lonlat, tiled_grids
from instageo.data.lock import lock_for, update_lock
from instageo.data.observations import raster_remap
from instageo.recipe.presets import preset_for
from instageo.data.quicklook import chips_quicklook, class_colours
from instageo.data.split import assign_splits
from instageo.errors import InputError
from instageo.files import write_json_atomic
from instageo.recipe.models import MaskSpec, Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult

INDEX_COLUMNS = ["chip_id", "observation", "lon", "lat", "crs", "date", "split", "dates", "items",
                 "cloud_fraction", "nodata_fraction", "image", "label", "image_sha256", "label_sha256"]


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    jobs = make_jobs(recipe, inputs["search"], ctx.log)
    least = recipe.data.chips.min_observations
    few = [job for job in jobs if job.label is not None and job.label_polygons is None
           and 1 + len(job.neighbours) < least]
    skip = {job.chip_id for job in few}
    jobs = [job for job in jobs if job.chip_id not in skip]
    records = run_jobs(jobs, ctx.workdir, recipe, ctx) + [
        ChipRecord(j.chip_id, j.observation, j.lon, j.lat, j.grid.crs, j.date, "skipped", "few_observations")
        for j in few]
    built = [r for r in records if r.status == "ok"]
    skipped = Counter(r.reason for r in records if r.status != "ok")
    if not built:
        raise InputError(f"no chip could be built from {len(records)} observation(s): skipped {dict(skipped)}")
    grids = {job.chip_id: job.grid for job in jobs}
    footprints = dict(zip([r.chip_id for r in built], footprints_lonlat([grids[r.chip_id] for r in built])))
    splits = assign_splits(built, recipe.data.split, footprints, observation_sources(inputs["search"]))
    write_index(ctx.workdir / "index.csv", built, splits)
    train = [r for r in built if splits[r.chip_id] == "train"]
    stats = dataset_stats(ctx.workdir, train, recipe)
    write_json_atomic(ctx.workdir / "stats.json", stats)
    chips = recipe.data.chips
    chips_quicklook(ctx.workdir, built, list(chips.bands), chips.time.steps,
                    class_colours(len(recipe.task.classes), recipe.task.colors), chips.label.ignore_index,
                    ctx.workdir / "quicklook.png", zoom=max(1, 96 // chips.size))
    counts = Counter(splits.values())
    warnings = [f"class '{name}' has no pixel in the train split: the models cannot learn it"
                for name, pixels in zip(recipe.task.classes, stats.get("class_pixels", [])) if pixels == 0]
    for warning in warnings:
        ctx.log.warning("%s", warning)
    return StageOutput(
        files={"index": "index.csv", "stats": "stats.json", "quicklook": "quicklook.png"},
        summary={"chips": len(built), "skipped": dict(sorted(skipped.items())),
                 "splits": {name: counts.get(name, 0) for name in ("train", "val", "test", "excluded")},
                 **({"warnings": warnings} if warnings else {})},
    )


def after(recipe: Recipe, result: StageResult) -> None:
    """Pin every chip's checksums in the lock file, for `instarun verify`."""
    if recipe.path is None:
        return
    rows = read_index(result.path("index"))
    checksums = {row["chip_id"]: [row["image_sha256"], row["label_sha256"]] for row in rows}
    update_lock(lock_for(recipe, result.dir.parent.parent), recipe.name,
                chips={"key": result.key, "checksums": checksums})


def observation_sources(search: StageResult) -> dict[str, str]:
    """Observation id -> the file it came from (a label raster, a polygons file), for splits."""
    with open(search.path("observations"), newline="") as handle:
        return {row["id"]: row["source"] or "" for row in csv.DictReader(handle)}


def masked_items(items: dict[str, dict], mask: MaskSpec, log) -> dict[str, dict]:
    """The items chips may use: when ``mask`` (data.chips.mask) masks classes and an item has
    no mask asset, a warning names them; with data.chips.mask.require they are left out."""
    unmasked = sorted(i for i, item in items.items() if item.get("mask") is None)
    if not mask.classes or not unmasked:
        return items
    shown = ", ".join(unmasked[:5]) + (f" (+{len(unmasked) - 5} more)" if len(unmasked) > 5 else "")
    if mask.require:
        log.warning("%d acquisition(s) have no cloud mask and are skipped (data.chips.mask.require): %s",
                    len(unmasked), shown)
        skipped = set(unmasked)
        return {i: item for i, item in items.items() if i not in skipped}
    log.warning("%d acquisition(s) have no cloud mask, so their clouds stay in the chips: %s "
                "(data.chips.mask.require: true skips them)", len(unmasked), shown)
    return items


def make_jobs(recipe: Recipe, search: StageResult, log=None) -> list[ChipJob]:
    items = masked_items(json.loads(search.path("items").read_text()), recipe.data.chips.mask, log or logging.getLogger("instageo.chips"))
    candidates = json.loads(search.path("candidates").read_text())
    preset = preset_for(recipe.data.source)
    chips, time = recipe.data.chips, recipe.data.chips.time
    common = dict(
        bands=list(chips.bands), mask_classes=list(chips.mask.classes), strategy=chips.mask.strategy,
        max_fraction=chips.mask.max_fraction, buffer=chips.label.buffer,
        ignore_index=chips.label.ignore_index, regression=recipe.task.kind == "regression",
        base_dir=str(search.dir), signing=preset.signing, auth=preset.auth,
    )
    jobs = []
    with open(search.path("observations"), newline="") as handle:
        observations = list(csv.DictReader(handle))
    points = PointIndex(observations, recipe)
    gridded = chips.placement == "grid"
    for row in observations:
        if gridded and row["kind"] == "point":
            continue  # placed below, date by date
        steps = steps_of(row, items, candidates, time)
        lon, lat = float(row["lon"]), float(row["lat"])
        label = float(row["label"]) if row["label"] not in ("", None) else None
        if row["kind"] == "raster":  # a label raster: tiles without overlap, each at its own centre
            bounds = tuple(float(row[k]) for k in ("west", "south", "east", "north"))
            grids = tiled_grids(bounds, chips.size, chips.resolution, chips.crs, chips.stride or chips.size,
                                flush=False)
            remap = raster_remap(recipe)
            for index, (grid, (centre_lon, centre_lat)) in enumerate(zip(grids, centres_lonlat(grids))):
                jobs.append(ChipJob(f"{_safe(row['id'])}-{index:03d}", row["id"], centre_lon, centre_lat,
                                    row["date"], None, row["source"], grid, steps, remap=remap, **common))
            continue
        if label is None:
            raise InputError(f"observation {row['id']} has no label")
        polygons = str(search.dir / row["source"]) if row["kind"] == "polygon" else None
        grid = shifted(centred_grid(lon, lat, chips.size, chips.resolution, chips.crs), row["id"], recipe)
        neighbours = points.near(row) if row["kind"] == "point" else ()
        jobs.append(ChipJob(_safe(row["id"]), row["id"], lon, lat, row["date"], label, None, grid,
                            steps, label_polygons=polygons, neighbours=neighbours, **common))
    if gridded:
        jobs += grid_jobs([r for r in observations if r["kind"] == "point"], items, candidates, recipe, common)
    return jobs


def grid_jobs(rows: list[dict], items: dict, candidates: dict, recipe: Recipe, common: dict) -> list[ChipJob]:
    """data.chips.placement: grid: per observation date, chips side by side over the extent of
    that date's points; each chip that holds some is labelled with all of them (the first as
    its own, which also gives its acquisitions)."""
    chips = recipe.data.chips
    by_date: dict[str, list[dict]] = {}
    for row in rows:
        by_date.setdefault(row["date"], []).append(row)
    jobs = []
    for date, group in sorted(by_date.items()):
        lons, lats = [float(r["lon"]) for r in group], [float(r["lat"]) for r in group]
        pad = chips.resolution / 111_000
        bounds = (min(lons) - pad, min(lats) - pad, max(lons) + pad, max(lats) + pad)
        grids = tiled_grids(bounds, chips.size, chips.resolution, chips.crs, chips.size, flush=False)
        for index, (grid, footprint) in enumerate(zip(grids, footprints_lonlat(grids))):
            inside = [r for r in group if footprint[0] <= float(r["lon"]) <= footprint[2]
                      and footprint[1] <= float(r["lat"]) <= footprint[3]]
            if not inside:
                continue
            first, rest = inside[0], inside[1:]
            steps = steps_of(first, items, candidates, chips.time)
            jobs.append(ChipJob(f"grid-{date}-{index:04d}", first["id"], float(first["lon"]), float(first["lat"]),
                                date, float(first["label"]), None, grid, steps,
                                neighbours=tuple((float(r["lon"]), float(r["lat"]), float(r["label"])) for r in rest),
                                **common))
    return jobs


def steps_of(row: dict, items: dict, candidates: dict, time) -> list[list[Candidate]]:
    """The acquisitions each step of an observation's chip may take: its own search
    candidates, at its date (and time of day, when it has one)."""
    own = [items[i] for i in candidates.get(row["id"], []) if i in items]
    at = dt.time.fromisoformat(row["time"]) if row.get("time") else None
    return candidates_for(own, dt.date.fromisoformat(row["date"]), time, at)


def shifted(grid: ChipGrid, observation: str, recipe: Recipe) -> ChipGrid:
    """The chip moved by a random whole number of pixels (at most data.chips.max_shift each
    way), the same for the same observation and split seed."""
    most = recipe.data.chips.max_shift
    if most == 0:
        return grid
    rng = random.Random(f"{recipe.data.split.seed}:{observation}")
    dx, dy = rng.randint(-most, most), rng.randint(-most, most)
    a, b, c, d, e, f = grid.transform
    return ChipGrid(grid.crs, (a, b, c + dx * a, d, e, f + dy * e), grid.size)


class PointIndex:
    """Point observations binned on a lon/lat grid, to find the others that may fall inside a
    point's chip (and within its date tolerance) without looking at every point. The box is
    generous (half a chip plus the largest shift, and some); the chip keeps those that land
    on its pixels."""

    def __init__(self, rows: list[dict], recipe: Recipe):
        chips = recipe.data.chips
        self.reach = (chips.size / 2 + chips.max_shift + 1) * chips.resolution / 111_000 * 1.1  # degrees
        self.cell = 2 * self.reach
        self.tolerance = chips.time.tolerance_days
        labelled = [r for r in rows if r["kind"] == "point" and r["label"] not in ("", None)]
        # one bin width in longitude for all: wide enough at the points' highest latitude
        highest = max((abs(float(r["lat"])) for r in labelled), default=0.0)
        self.lon_cell = self.cell / max(math.cos(math.radians(highest)), 0.05)
        self.bins: dict[tuple[int, int], list[dict]] = {}
        for row in labelled:
            self.bins.setdefault(self._bin(float(row["lon"]), float(row["lat"])), []).append(row)

    def _bin(self, lon: float, lat: float) -> tuple[int, int]:
        return int(lon // self.lon_cell), int(lat // self.cell)

    def near(self, own: dict) -> tuple[tuple[float, float, float], ...]:
        """(lon, lat, label) of the other labelled points near ``own`` in space and time."""
        lon0, lat0 = float(own["lon"]), float(own["lat"])
        across = self.reach / max(math.cos(math.radians(lat0)), 0.05)
        date = dt.date.fromisoformat(own["date"])
        bx, by = self._bin(lon0, lat0)
        found = []
        for x in range(bx - 1, bx + 2):
            for y in range(by - 1, by + 2):
                for row in self.bins.get((x, y), []):
                    lon, lat = float(row["lon"]), float(row["lat"])
                    if (row["id"] != own["id"] and abs(lon - lon0) <= across and abs(lat - lat0) <= self.reach
                            and abs((dt.date.fromisoformat(row["date"]) - date).days) <= self.tolerance):
                        found.append((lon, lat, float(row["label"])))
        return tuple(sorted(found))


def candidates_for(items: list[dict], date: dt.date, time, at: dt.time | None = None) -> list[list[Candidate]]:
    """Per time step (oldest first): the acquisitions within tolerance of its target date (or,
    with ``at`` and time.tolerance_minutes, of its target date and time; with
    time.daytime_only, taken in daylight), in the order the recipe prefers them."""
    steps = []
    for k in reversed(range(time.steps)):
        target = date - dt.timedelta(days=k * time.step_days)
        if at is not None and time.tolerance_minutes is not None:
            moment = dt.datetime.combine(target, at, dt.timezone.utc)
            near = [i for i in items if abs((_moment(i) - moment).total_seconds()) <= time.tolerance_minutes * 60]
        else:
            near = [i for i in items if abs((_date(i) - target).days) <= time.tolerance_days]
        if time.daytime_only:
            near = [i for i in near if sun_elevation(_moment(i), *_centre(i)) > 0]
        near.sort(key=lambda i: _preference(_date(i), target, time.prefer) + (i["datetime"], i["id"]))
        steps.append([Candidate(i["id"], i["datetime"], i["bands"], i["mask"], i["mask_kind"]) for i in near])
    return steps


def run_jobs(jobs: list[ChipJob], out: Path, recipe: Recipe, ctx: StageContext) -> list[ChipRecord]:
    executor = recipe.data.executor
    jobs = sorted(jobs, key=lambda job: (job.grid.crs, -job.grid.transform[5], job.grid.transform[2]))
    if executor.kind == "dask":
        from instageo.data.dask_executor import run_chips_on_dask

        records = run_chips_on_dask(jobs, str(out), executor.address, executor.workers, ctx)
    else:
        # one band of neighbouring chips per thread, built one after another: neighbours share
        # COG blocks, and two threads fetching the same block at once would both download it
        finished: queue.Queue = queue.Queue()

        def build_region(region: list[ChipJob]) -> None:
            try:
                for job in region:
                    finished.put(build_chip(job, str(out)))
            except BaseException as exc:  # handed to the main thread, which raises it
                finished.put(exc)

        with ThreadPoolExecutor(executor.workers) as pool:
            for region in _regions(jobs, executor.workers):
                pool.submit(build_region, region)
            records = []
            for _ in ctx.track(range(len(jobs)), description="chips"):
                item = finished.get()
                if isinstance(item, BaseException):
                    raise item
                records.append(item)
    return sorted(records, key=lambda r: r.chip_id)


def _regions(jobs: list[ChipJob], count: int) -> list[list[ChipJob]]:
    """Spatially sorted jobs cut into ``count`` runs of neighbours."""
    size = len(jobs)
    return [chunk for i in range(count) if (chunk := jobs[i * size // count:(i + 1) * size // count])]


def write_index(path: Path, records: list[ChipRecord], splits: dict[str, str]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, INDEX_COLUMNS)
        writer.writeheader()
        for record in records:
            row = asdict(record)
            row.update(split=splits[record.chip_id], dates=";".join(record.dates), items=";".join(record.items))
            writer.writerow({k: row[k] for k in INDEX_COLUMNS})


def read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def dataset_stats(folder: Path, train: list[ChipRecord], recipe: Recipe) -> dict:
    """Per-band mean/std over valid train pixels (all steps), and class weights."""
    import rasterio

    bands, steps = recipe.data.chips.bands, recipe.data.chips.time.steps
    total = np.zeros(len(bands))
    squares = np.zeros(len(bands))
    counts = np.zeros(len(bands))
    classes = Counter()
    ignore = recipe.data.chips.label.ignore_index
    for record in train:
        with rasterio.open(folder / record.image) as dataset:
            image = dataset.read().reshape(steps, len(bands), -1).astype(np.float64)
        valid = ~np.isnan(image)
        total += np.where(valid, image, 0).sum(axis=(0, 2))
        squares += np.where(valid, image**2, 0).sum(axis=(0, 2))
        counts += valid.sum(axis=(0, 2))
        if recipe.task.kind == "segmentation":
            with rasterio.open(folder / record.label) as dataset:
                values, n = np.unique(dataset.read(1), return_counts=True)
            classes.update({int(v): int(c) for v, c in zip(values, n) if v != ignore})
    mean = total / np.maximum(counts, 1)
    std = np.sqrt(np.maximum(squares / np.maximum(counts, 1) - mean**2, 0))
    stats = {"bands": list(bands), "mean": [round(float(v), 6) for v in mean],
             "std": [round(float(v), 6) for v in std], "train_chips": len(train)}
    if recipe.task.kind == "segmentation":
        n_classes = len(recipe.task.classes)
        pixels = [classes.get(c, 0) for c in range(n_classes)]
        seen = sum(pixels)
        stats["class_pixels"] = pixels
        stats["class_weights"] = [round(seen / (n_classes * p), 6) if p else 0.0 for p in pixels]
    return stats


def _preference(date: dt.date, target: dt.date, prefer: str) -> tuple[int, int]:
    """Sort key of an acquisition for a step: the fallback order the recipe declares."""
    days = (date - target).days
    if prefer == "earlier":
        return (days > 0, abs(days))
    if prefer == "later":
        return (days < 0, abs(days))
    return (0, abs(days))


def _date(item: dict) -> dt.date:
    return dt.date.fromisoformat(item["datetime"][:10])


def _moment(item: dict) -> dt.datetime:
    moment = dt.datetime.fromisoformat(item["datetime"].replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _centre(item: dict) -> tuple[float, float]:
    west, south, east, north = item["bbox"]
    return (west + east) / 2, (south + north) / 2


def sun_elevation(moment: dt.datetime, lon: float, lat: float) -> float:
    """The sun's elevation above the horizon in degrees (NOAA's approximate solar position:
    declination and equation of time from the fractional year; within a degree or so)."""
    moment = moment.astimezone(dt.timezone.utc)
    day = moment.timetuple().tm_yday
    hours = moment.hour + moment.minute / 60 + moment.second / 3600
    gamma = 2 * math.pi / 365 * (day - 1 + (hours - 12) / 24)
    minutes = 229.18 * (0.000075 + 0.001868 * math.cos(gamma) - 0.032077 * math.sin(gamma)
                        - 0.014615 * math.cos(2 * gamma) - 0.040849 * math.sin(2 * gamma))
    declination = (0.006918 - 0.399912 * math.cos(gamma) + 0.070257 * math.sin(gamma)
                   - 0.006758 * math.cos(2 * gamma) + 0.000907 * math.sin(2 * gamma)
                   - 0.002697 * math.cos(3 * gamma) + 0.00148 * math.sin(3 * gamma))
    solar_minutes = hours * 60 + minutes + 4 * lon
    hour_angle = math.radians(solar_minutes / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(declination) + math.cos(phi) * math.cos(declination) * math.cos(hour_angle)
    return 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", text)

"""The `predict` stage: the exported student over an area, to Cloud-Optimized GeoTIFFs.

The area (``export.predict.bbox``, default: the observations' extent) is tiled with chips
that overlap by ``overlap``; each tile's acquisitions are chosen and read by the chips
stage's own code (same masks, same temporal selection), so inputs at prediction match
inputs at training. Tiles go through ONNX in batches while the next tiles are read, and are
blended with a smooth window (no seams). Outputs: prediction.tif (uint8 classes, colour table,
class names, nodata 255, overviews by mode) and confidence.tif (float32 probability of the
predicted class).
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from instageo.data.chip_build import ChipJob, read_stack, reader_for
from instageo.data.chips import candidates_for
from instageo.data.grid import ChipGrid, tiled_grids
from instageo.data.presets import preset_for
from instageo.data.search import chip_extent
from instageo.deploy import onnx
from instageo.errors import InputError
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult

NODATA_CLASS = 255
MAX_MOSAIC_PIXELS = 64_000_000  # one in-memory mosaic (~1 GB of class probabilities at 3 classes)


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    search, export = inputs["search"], inputs["export"]
    bundle = json.loads(export.path("bundle").read_text())
    chips, spec = recipe.data.chips, recipe.export.predict
    observations = _observations(search)
    area = spec.bbox or _extent(observations, recipe)
    date = spec.date or max(dt.date.fromisoformat(o["date"]) for o in observations)
    overlap = int(round(chips.size * spec.overlap))
    _check_size(area, chips.resolution, "export.predict.bbox" if spec.bbox else "the observations' extent")
    grids = tiled_grids(area, chips.size, chips.resolution, chips.crs, max(chips.size - overlap, 1))
    items = list(json.loads(search.path("items").read_text()).values())
    preset = preset_for(recipe.data.source)
    steps = candidates_for(items, date, chips.time)
    jobs = [ChipJob(f"tile{i:05d}", "", 0.0, 0.0, date.isoformat(), None, None, grid, steps,
                    bands=list(chips.bands), mask_classes=list(chips.mask.classes),
                    strategy=chips.mask.strategy, max_fraction=chips.mask.max_fraction, buffer=0,
                    ignore_index=chips.label.ignore_index, regression=False, base_dir=str(search.dir),
                    signing=preset.signing, auth=preset.auth) for i, grid in enumerate(grids)]
    mosaic = Mosaic(grids, len(bundle["classes"]))
    session = onnx.session(export.path("onnx"))
    mean = np.array(bundle["mean"], np.float32)[None, :, None, None]
    std = np.maximum(np.array(bundle["std"], np.float32), 1e-6)[None, :, None, None]
    weight = blend_window(chips.size, overlap)
    bands = list(chips.bands)
    rgb_bands = [bands.index(b) for b in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(bands) else None
    with ThreadPoolExecutor(4) as pool:  # reading the next tiles while the model runs
        stacks = pool.map(lambda job: read_stack(job, reader_for(job)), jobs)
        batch: list = []
        for job, stack in ctx.track(zip(jobs, stacks), total=len(jobs), description="tiles"):
            if not isinstance(stack, str):
                batch.append((job.grid, stack))
            if len(batch) == spec.batch_size:
                _predict(batch, session, mean, std, weight, mosaic, rgb_bands)
                batch = []
        if batch:
            _predict(batch, session, mean, std, weight, mosaic, rgb_bands)
    classes, confidence = mosaic.result()
    if (classes != NODATA_CLASS).sum() == 0:
        raise InputError(f"prediction: no imagery for the area {area} around {date}")
    write_cog(ctx.workdir / "prediction.tif", classes[None], mosaic, NODATA_CLASS, bundle,
              colours=True, resampling="mode")
    write_cog(ctx.workdir / "confidence.tif", confidence[None], mosaic, np.nan, bundle,
              colours=False, resampling="average")
    files = {"prediction": "prediction.tif", "confidence": "confidence.tif"}
    if rgb_bands:
        write_cog(ctx.workdir / "rgb.tif", mosaic.true_colour(), mosaic, 0, bundle, colours=False,
                  resampling="average", description="true colour")
        files["rgb"] = "rgb.tif"
    counts = np.bincount(classes[classes != NODATA_CLASS].ravel(), minlength=len(bundle["classes"]))
    return StageOutput(
        files=files,
        summary={"prediction": "@prediction", "confidence": "@confidence",
                 "prediction_area": {"bbox": list(area), "date": date.isoformat(), "tiles": len(jobs),
                                     "class_pixels": dict(zip(bundle["classes"], counts.tolist()))}},
    )


def _check_size(area, resolution: float, source: str) -> None:
    """Refuse areas whose mosaic would not fit in memory, before reading anything."""
    from instageo.data.split import distance_km

    west, south, east, north = area
    width = distance_km(west, (south + north) / 2, east, (south + north) / 2) * 1000 / resolution
    height = distance_km(west, south, west, north) * 1000 / resolution
    if width * height > MAX_MOSAIC_PIXELS:
        raise InputError(
            f"prediction area ({source}: {width:.0f} x {height:.0f} pixels at {resolution:g} m) is larger "
            f"than {MAX_MOSAIC_PIXELS:,} pixels; set export.predict.bbox to a smaller area"
        )


def _observations(search: StageResult) -> list[dict]:
    with open(search.path("observations"), newline="") as handle:
        return list(csv.DictReader(handle))


def _extent(observations: list[dict], recipe: Recipe) -> tuple[float, float, float, float]:
    from instageo.data.observations import Observation

    boxes = [chip_extent(Observation(o["id"], float(o["lon"]), float(o["lat"]),
                                     dt.date.fromisoformat(o["date"])), recipe) for o in observations]
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def blend_window(size: int, overlap: int) -> np.ndarray:
    """Weights that ramp smoothly (sin^2) over the overlap at each edge, 1 inside."""
    ramp = np.ones(size, np.float32)
    if overlap > 0:
        edge = np.sin(np.linspace(0, np.pi / 2, overlap + 2)[1:-1]) ** 2
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


class Mosaic:
    """Accumulates blended class probabilities of tiles on one grid."""

    def __init__(self, grids: list[ChipGrid], classes: int):
        resolution = grids[0].transform[0]
        self.crs = grids[0].crs
        self.left = min(g.transform[2] for g in grids)
        self.top = max(g.transform[5] for g in grids)
        self.resolution = resolution
        self.width = int(round((max(g.bounds[2] for g in grids) - self.left) / resolution))
        self.height = int(round((self.top - min(g.bounds[1] for g in grids)) / resolution))
        self.probabilities = np.zeros((classes, self.height, self.width), np.float32)
        self.weights = np.zeros((self.height, self.width), np.float32)
        self.rgb = np.zeros((3, self.height, self.width), np.float32)  # last step, true colour

    @property
    def transform(self):
        from affine import Affine

        return Affine(self.resolution, 0.0, self.left, 0.0, -self.resolution, self.top)

    def add(self, grid: ChipGrid, probabilities: np.ndarray, weight: np.ndarray,
            rgb: np.ndarray | None = None) -> None:
        column = int(round((grid.transform[2] - self.left) / self.resolution))
        row = int(round((self.top - grid.transform[5]) / self.resolution))
        window = (slice(row, row + grid.size), slice(column, column + grid.size))
        self.probabilities[(slice(None), *window)] += probabilities * weight
        self.weights[window] += weight
        if rgb is not None:
            self.rgb[(slice(None), *window)] += np.nan_to_num(rgb) * weight

    def true_colour(self) -> np.ndarray:
        """8-bit RGB of the input's last step (reflectance 0-0.3 stretched), 0 where empty."""
        covered = self.weights > 0
        rgb = self.rgb / np.where(covered, self.weights, 1)
        return np.where(covered, np.clip(rgb / 0.3 * 254 + 1, 1, 255), 0).astype(np.uint8)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        covered = self.weights > 0
        probabilities = self.probabilities / np.where(covered, self.weights, 1)
        classes = np.where(covered, probabilities.argmax(0), NODATA_CLASS).astype(np.uint8)
        confidence = np.where(covered, probabilities.max(0), np.nan).astype(np.float32)
        return classes, confidence


def _predict(batch, session, mean, std, weight, mosaic: Mosaic, rgb_bands: list[int] | None) -> None:
    images = []
    for _, stack in batch:
        image = (stack.image - mean) / std  # (T, C, H, W)
        images.append(np.nan_to_num(image, nan=0.0).transpose(1, 0, 2, 3))
    logits = onnx.run(session, np.stack(images).astype(np.float32), len(images))
    logits = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for (grid, stack), tile in zip(batch, probabilities):
        no_imagery = stack.invalid.all(axis=0)  # nothing seen in any step: leave it to others
        rgb = stack.image[-1, rgb_bands] if rgb_bands else None
        mosaic.add(grid, tile, np.where(no_imagery, 0.0, weight), rgb)


def write_cog(path: Path, array: np.ndarray, mosaic: Mosaic, nodata, bundle: dict, colours: bool,
              resampling: str, description: str = "confidence") -> None:
    """A tiled, compressed COG with internal overviews (mode for classes, average otherwise)."""
    import rasterio
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as copy_dataset

    profile = dict(driver="GTiff", width=mosaic.width, height=mosaic.height, count=len(array), dtype=array.dtype,
                   crs=mosaic.crs, transform=mosaic.transform, nodata=nodata)
    with MemoryFile() as memory, memory.open(**profile) as dataset:
        dataset.write(array)
        if colours:
            from instageo.data.quicklook import hex_rgb

            dataset.write_colormap(1, {i: (*hex_rgb(c), 255) for i, c in enumerate(bundle["colours"])})
            dataset.update_tags(1, **{f"class_{i}": name for i, name in enumerate(bundle["classes"])})
            dataset.set_band_description(1, "class")
        else:
            for band in range(1, len(array) + 1):
                dataset.set_band_description(band, description)
        dataset.update_tags(model=f"{bundle['backbone']} depth {bundle['depth']}")
        levels = [f for f in (2, 4, 8, 16) if min(mosaic.width, mosaic.height) // f >= 16]
        if levels:
            dataset.build_overviews(levels, getattr(rasterio.enums.Resampling, resampling))
        copy_dataset(dataset, path, driver="COG", compress="DEFLATE", blocksize=256,
                     overview_resampling=resampling, copy_src_overviews=bool(levels))

"""The `predict` stage: the exported student over an area, to Cloud-Optimized GeoTIFFs.

The area (``export.predict.bbox``, the bounds of ``export.predict.geojson``, or else the
observations' extent) is tiled with chips that overlap by ``overlap``; each tile's
acquisitions are chosen and read by the chips stage's own code (same masks, same temporal
selection), so inputs at prediction match inputs at training. The search stage's items are
used when they cover the area at the prediction date; otherwise the catalogue is searched
afresh for the area. Tiles go through ONNX in batches while the next tiles are read, and are
blended with a smooth window (no seams).

Areas larger than memory stream through: tiles arrive row by row, and the rows above the
next tile row can no longer change, so they are finished and written out (memory holds one
tile row's height of the area, whatever its height). Outputs: prediction.tif (uint8
classes, colour table, class names, nodata 255, overviews by mode), confidence.tif (float32
probability of the predicted class) and rgb.tif, the input of the last step: true colour
when the bands have red, green and blue; for radar, VV / VH / VV-VH as false colour.
"""

from __future__ import annotations

import csv
import datetime as dt
import functools
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instageo.data.chip_build import ChipJob, read_stack, reader_for
from instageo.data.chips import candidates_for, masked_items
from instageo.data.grid import ChipGrid, boxes_touch, centres_lonlat, tiled_grids, union_boxes
from instageo.recipe.presets import preset_for
from instageo.data.search import chip_extent, open_catalogue, search_area
from instageo.deploy import onnx
from instageo.deploy.engine import InputColour, Layout, Outputs, TileModel, predict_rows
from instageo.deploy.stac_meta import write_prediction_item
from instageo.errors import InputError
from instageo.files import write_json_atomic
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult

MAX_AREA_PIXELS = 2**33  # ~8.6 G pixels (e.g. 2,700 km x 2,700 km at 30 m): hours of reading
MAX_TILES = 1_000_000
MAX_STRIP_BYTES = 2 * 2**30  # one tile row across the area: probabilities, weights, colour


@dataclass
class Tiling:
    """What the predict stage will do: the area, its date, the items and the tiles to read."""

    area: tuple[float, float, float, float]
    area_name: str
    outline: object  # shapely geometry in lon/lat, or None
    date: dt.date
    items: dict[str, dict]
    items_from: str
    jobs: list[ChipJob]
    layout: Layout
    overlap: int


@dataclass(frozen=True)
class Area:
    """One area to predict over: its name (the folder of its COGs), lon/lat box, optional
    outline (outside it: nodata) and where the recipe declared it (for messages)."""

    name: str
    bbox: tuple[float, float, float, float]
    outline: object = None
    declared: str = "the observations' extent"


def areas_of(recipe: Recipe, search: StageResult) -> list[Area]:
    """export.predict.areas (each its own COGs), else the one area of bbox / geojson / the
    observations' extent."""
    spec = recipe.export.predict
    if isinstance(spec.areas, list):
        return [Area(f"area{i + 1}", tuple(box), None, f"export.predict.areas[{i}]") for i, box in enumerate(spec.areas)]
    if spec.areas is not None:
        return _areas_from(spec.areas)
    outline = _outline(spec.geojson) if spec.geojson else None
    if spec.bbox:
        return [Area("area", spec.bbox, outline, "export.predict.bbox")]
    if outline is not None:
        return [Area("area", outline.bounds, outline, "export.predict.geojson")]
    return [Area("area", _extent(_observations(search), recipe))]


def plan_tiles(recipe: Recipe, search: StageResult, classes: int, ctx: StageContext, area: Area | None = None) -> Tiling:
    """The predict stage's tiling: the area and date the recipe says (default: the
    observations' extent and latest date), read from the search stage's items when they
    cover it."""
    observations = _observations(search)
    area = area or areas_of(recipe, search)[0]
    date = recipe.export.predict.date or max(dt.date.fromisoformat(o["date"]) for o in observations)
    check_area_size(recipe, area, classes)
    items, items_from = _items(recipe, search, area.bbox, date, ctx)
    return tile_area(recipe, area, date, items, items_from, search.dir, ctx.log)


def check_area_size(recipe: Recipe, area: Area, classes: int,
                    fix: str = "set export.predict.bbox to a smaller area") -> int:
    """The tiles over ``area``, or InputError ending with ``fix`` (what the caller's user can
    change: a recipe field, a CLI option, the drawn area) when it is too large."""
    chips = recipe.data.chips
    return _check_size(area.bbox, chips.resolution, chips.size, _stride(recipe), classes, area.declared, fix)


def _overlap(recipe: Recipe) -> int:
    """Pixels that neighbouring tiles share."""
    return int(round(recipe.data.chips.size * recipe.export.predict.overlap))


def _stride(recipe: Recipe) -> int:
    return max(recipe.data.chips.size - _overlap(recipe), 1)


def area_grids(recipe: Recipe, area: Area) -> list[ChipGrid]:
    """The tiles' grids over ``area``, neighbours sharing the recipe's overlap."""
    chips = recipe.data.chips
    return tiled_grids(area.bbox, chips.size, chips.resolution, chips.crs, _stride(recipe))


def tile_area(recipe: Recipe, area: Area, date: dt.date, items: dict[str, dict], items_from: str,
              base_dir: Path, log) -> Tiling:
    """Tiles over ``area`` on ``date``, each to be read from ``items`` (by id; relative
    hrefs from ``base_dir``) with the chips stage's acquisition choice and masks."""
    chips = recipe.data.chips
    grids = area_grids(recipe, area)
    steps = candidates_for(list(masked_items(items, recipe, log).values()), date, chips.time)
    jobs = [_tile_job(recipe, f"tile{i:05d}", grid, lon, lat, date, steps, base_dir)
            for i, (grid, (lon, lat)) in enumerate(zip(grids, centres_lonlat(grids)))]
    return Tiling(area.bbox, area.declared, area.outline, date, items, items_from, jobs, Layout.of(grids),
                  _overlap(recipe))


def _tile_job(recipe: Recipe, name: str, grid: ChipGrid, lon: float, lat: float, date: dt.date, steps,
              base_dir: Path) -> ChipJob:
    """A tile to read as the chips stage reads a chip: its steps' candidates, masks, rules."""
    chips, preset = recipe.data.chips, preset_for(recipe.data.source)
    return ChipJob(name, "", lon, lat, date.isoformat(), None, None, grid, steps, bands=list(chips.bands),
                   mask_classes=list(chips.mask.classes), strategy=chips.mask.strategy,
                   max_fraction=chips.mask.max_fraction, buffer=0, ignore_index=chips.label.ignore_index,
                   regression=False, base_dir=str(base_dir), signing=preset.signing, auth=preset.auth)


def inputs_at(recipe: Recipe, items: dict[str, dict], base_dir: Path, date: dt.date, lon: float, lat: float,
              log) -> dict:
    """The model's inputs at a point: a tile centred on it, its acquisitions chosen as predict
    chooses them (by the tile's own cloud cover), and the point's value of each band at each
    step ({"dates", "bands", "values": [step][band]}, NaN as null), or {"reason"} when none."""
    from instageo.data.grid import centred_grid

    chips = recipe.data.chips
    grid = centred_grid(lon, lat, chips.size, chips.resolution, chips.crs)
    steps = candidates_for(list(masked_items(items, recipe, log).values()), date, chips.time)
    job = _tile_job(recipe, "point", grid, lon, lat, date, steps, base_dir)
    stack = read_stack(job, reader_for(job))
    if isinstance(stack, str):
        return {"reason": str(stack)}
    from pyproj import Transformer

    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
    column, row = (int(v) for v in ~grid.affine * (x, y))
    values = stack.image[:, :, min(max(row, 0), chips.size - 1), min(max(column, 0), chips.size - 1)]
    return {"dates": stack.dates, "bands": list(chips.bands),
            "values": [[None if v != v else round(float(v), 5) for v in step] for step in values]}


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """A student's prediction (the `predict` stage)."""
    return predict(recipe, inputs["search"], inputs["export"], ctx)


def run_teacher(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """The teacher's prediction over the same areas (the `teacher_predict` stage)."""
    return predict(recipe, inputs["search"], inputs["teacher_export"], ctx)


def predict(recipe: Recipe, search: StageResult, export: StageResult, ctx: StageContext) -> StageOutput:
    """Every area with the exported model of ``export``. One area: its COGs at the stage's
    root; several (export.predict.areas): areas/<name>/*.tif each, and an index areas.geojson."""
    bundle = json.loads(export.path("bundle").read_text())
    areas = areas_of(recipe, search)
    several = recipe.export.predict.areas is not None
    files: dict[str, str] = {}
    summaries = []
    for area in areas:
        folder = Path("areas") / area.name if several else Path(".")
        (ctx.workdir / folder).mkdir(parents=True, exist_ok=True)
        written, summary, items = predict_area(recipe, search, export, bundle, area, ctx.workdir / folder, ctx)
        if items is not None:  # a fresh search: keep what it found next to the prediction
            write_json_atomic(ctx.workdir / folder / "items.json", items)
            written["items"] = "items.json"
        suffix = f":{area.name}" if several else ""
        files.update({f"{name}{suffix}": str(folder / path) for name, path in written.items()})
        summaries.append({"name": area.name, **{k: f"@{k}{suffix}" for k in ("prediction", "confidence")}, **summary})
    if not several:
        return StageOutput(files=files, summary={"prediction": "@prediction", "confidence": "@confidence",
                                                 "prediction_area": summaries[0]})
    write_json_atomic(ctx.workdir / "areas.geojson", _area_index(areas, summaries, files))
    first = areas[0].name
    files.update({"areas": "areas.geojson", "prediction": files[f"prediction:{first}"],
                  "confidence": files[f"confidence:{first}"]})
    return StageOutput(files=files, summary={"prediction": "@prediction", "confidence": "@confidence",
                                             "prediction_areas": "@areas", "areas": summaries})


def _area_index(areas: list[Area], summaries: list[dict], files: dict[str, str]) -> dict:
    """A GeoJSON mosaic index: one feature per area, its outline (or box) and its COGs."""
    from shapely.geometry import box, mapping

    features = []
    for area, summary in zip(areas, summaries):
        outputs = {k: files[f"{k}:{area.name}"] for k in ("prediction", "confidence", "rgb") if f"{k}:{area.name}" in files}
        geometry = area.outline if area.outline is not None else box(*area.bbox)
        properties = {"name": area.name, **outputs, **{k: v for k, v in summary.items()
                                                        if k not in ("name", "prediction", "confidence")}}
        features.append({"type": "Feature", "geometry": mapping(geometry), "properties": properties})
    return {"type": "FeatureCollection", "features": features}


FLOAT16_AGREEMENT = 0.99  # the float16 model's classes against PyTorch's, at least


def choose_model(bundle: dict, tolerance_pp: float | None, gpu: bool | None = None) -> tuple[str, str]:
    """The bundle's model file to predict with, and why. On a GPU: float16 when the export
    made one that agrees with PyTorch, else float32 (int8's kernels are CPU ones). On a CPU:
    int8 when the export made one and it lost at most ``tolerance_pp`` on val (decided on
    val, never on test)."""
    if onnx.gpu_present() if gpu is None else gpu:
        half = bundle.get("float16")
        if not bundle.get("model_fp16") or not half:
            return bundle["model"], "float32 on the GPU: no float16 model in the bundle (export.onnx.float16)"
        if half["argmax_agreement"] < FLOAT16_AGREEMENT:
            return bundle["model"], (f"float32 on the GPU: the float16 model agrees with PyTorch on only "
                                     f"{100 * half['argmax_agreement']:.1f}% of pixels")
        return bundle["model_fp16"], (f"float16 on the GPU: agrees with PyTorch on "
                                      f"{100 * half['argmax_agreement']:.2f}% of pixels")
    check = bundle.get("int8")
    if not bundle.get("model_int8") or not check:
        return bundle["model"], "float32: no int8 model in the bundle (export.onnx.quantize)"
    if tolerance_pp is None:
        return bundle["model"], "float32: export.predict.int8_tolerance_pp is null"
    val = check.get("val")
    if val is None:
        return bundle["model"], "float32: no val split to judge the int8 model on"
    if check["metric"] == "miou":
        lost, allowed = -100 * val["delta"], tolerance_pp
        said = f"val mIoU {100 * val['delta']:+.2f} pp"
    else:
        lost, allowed = val["delta"], tolerance_pp / 100 * val["float32"]
        said = f"val RMSE {val['delta']:+.4g} ({100 * val['delta'] / max(val['float32'], 1e-12):+.2f}%)"
    if lost <= allowed:
        return bundle["model_int8"], f"int8: {said}, within {tolerance_pp:g} (export.predict.int8_tolerance_pp)"
    return bundle["model"], f"float32: int8 {said}, beyond {tolerance_pp:g} (export.predict.int8_tolerance_pp)"


def predict_area(recipe: Recipe, search: StageResult, export: StageResult, bundle: dict, area: Area,
                 folder: Path, ctx: StageContext) -> tuple[dict[str, str], dict, dict | None]:
    """One area's COGs in ``folder``: (files, summary, the items of a fresh search or None)."""
    tiling = plan_tiles(recipe, search, len(bundle["classes"]), ctx, area)
    model, why = choose_model(bundle, recipe.export.predict.int8_tolerance_pp)
    ctx.log.info("predicting with %s (%s)", model, why)
    started = time.perf_counter()
    files, summary = predict_tiling(recipe, tiling, export.path("onnx").parent / model, bundle, folder, ctx)
    timing = {"seconds": round(time.perf_counter() - started, 3), "cores": os.cpu_count() or 1,
              "device": "gpu" if onnx.gpu_present() else "cpu",
              "resolution_m": recipe.data.chips.resolution}  # what runner.cost turns into CPU- or GPU-hours
    return (files, {**summary, "model": model, "model_why": why, **timing},
            tiling.items if tiling.items_from != "search" else None)


def predict_tiling(recipe: Recipe, tiling: Tiling, model_path: Path, bundle: dict, folder: Path,
                   ctx: StageContext) -> tuple[dict[str, str], dict]:
    """Read, predict, blend and write the COGs of a tiling into ``folder``: (files, summary).
    The predict stage and `instarun predict` both come here."""
    chips, spec = recipe.data.chips, recipe.export.predict
    layout = tiling.layout
    colour = InputColour.of(list(chips.bands), bundle)
    outline = _project(tiling.outline, layout.crs) if tiling.outline is not None else None
    mosaic: dict[str, str] = {}  # the dask executor's VRTs over its blocks
    batch_size = _batch_size(recipe, model_path)
    if spec.executor.kind == "dask":
        from instageo.deploy.blocks import BlockSpec, predict_blocks

        blocks = BlockSpec(str(folder), layout, bundle, str(model_path), chips.size, tiling.overlap,
                           list(chips.bands), batch_size, outline)
        outputs, mosaic = predict_blocks(tiling.jobs, blocks, spec.block_tiles, spec.executor, ctx)
    else:
        model = TileModel(model_path, bundle, chips.size, tiling.overlap, colour)
        outputs = Outputs(folder, layout, bundle, colour=colour, outline=outline)
        with outputs:
            predict_rows(tiling.jobs, model, batch_size, outputs, ctx.track)
    if outputs.class_pixels.sum() == 0:
        outputs.discard()
        raise InputError(f"prediction: no imagery for the area {tuple(round(v, 5) for v in tiling.area)} "
                         f"({tiling.area_name}) around {tiling.date}")
    summary = {"bbox": list(tiling.area), "date": tiling.date.isoformat(), "tiles": len(tiling.jobs),
               "items_from": tiling.items_from, "items": len(tiling.items), "width": layout.width,
               "height": layout.height, "batch_size": batch_size,
               "class_pixels": dict(zip(bundle["classes"], outputs.class_pixels.tolist()))}
    if mosaic:
        summary["blocks"] = len(list((folder / "blocks").iterdir()))
    files = {**outputs.finish(), **mosaic}
    files["item"] = write_prediction_item(folder, files, tiling.date.isoformat(),
                                          f"{bundle['backbone']} depth {bundle['depth']}")
    return files, summary


def _batch_size(recipe: Recipe, model_path: Path) -> int:
    """export.predict.batch_size when the recipe sets it, or on a CPU (where 2 is as fast as 8);
    on a GPU, unset: the fastest batch its memory holds (onnx.fastest_batch)."""
    spec, chips = recipe.export.predict, recipe.data.chips
    if "batch_size" in spec.model_fields_set or not onnx.gpu_present():
        return spec.batch_size
    steps, size = chips.time.steps, chips.size
    tile = (np.zeros((1, len(chips.bands), steps, size, size), np.float32), np.zeros((1, steps, 2), np.float32),
            np.zeros((1, 2), np.float32))
    return onnx.fastest_batch(onnx.session(model_path), tile, spec.batch_size)


def check_areas(recipe: Recipe, observations: list | None) -> None:
    """Plan-time checks, before any training: every area to predict over is under the size
    limits (the default area, the observations' extent, too: spread over continents, it
    asks for export.predict.bbox) and, for a local catalogue, overlaps its items."""
    from instageo.data.search import chip_extent

    spec = recipe.export.predict
    if spec.areas is not None or spec.bbox or spec.geojson:
        areas = areas_of(recipe, None)
    elif observations:
        areas = [Area("area", union_boxes(chip_extent(o, recipe) for o in observations))]
    else:
        return  # the demo's or label rasters' extent: known after the search stage
    for area in areas:
        check_area_size(recipe, area, len(recipe.task.classes))
        _check_tiles(area, recipe.export.viewer.zoom)
    if recipe.data.source.kind == "catalog":
        boxes = _catalogue_boxes(recipe.data.source.path)
        for area in areas:
            if boxes and not any(boxes_touch(area.bbox, box) for box in boxes):
                extent = union_boxes(boxes)
                raise InputError(f"prediction area ({area.declared}: {tuple(round(v, 5) for v in area.bbox)}) lies "
                                 f"outside every item of the catalogue (they cover {tuple(round(v, 5) for v in extent)})")


@functools.cache
def _catalogue_boxes(path: Path) -> list[tuple]:
    """The item footprints of a local catalogue, read once for all the variants checked."""
    from instageo.data.catalogue import LocalCatalogue

    return [tuple(item["bbox"]) for item in LocalCatalogue(path).items]


MAX_VIEWER_TILES = 50_000  # per layer: beyond that a static pyramid is the wrong tool (use serve)


def _check_tiles(area: Area, zoom: tuple[int, int]) -> None:
    """The viewer's static pyramid over an area stays a few tens of thousands of tiles."""
    west, south, east, north = area.bbox

    def index(lon: float, lat: float, z: int) -> tuple[int, int]:
        lat = max(min(lat, 85.0511), -85.0511)
        x = (lon + 180) / 360 * 2**z
        y = (1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * 2**z
        return int(min(x, 2**z - 1)), int(min(y, 2**z - 1))

    tiles = 0
    for z in range(zoom[0], zoom[1] + 1):
        (x0, y0), (x1, y1) = index(west, north, z), index(east, south, z)
        tiles += (x1 - x0 + 1) * (y1 - y0 + 1)
    if tiles > MAX_VIEWER_TILES:
        raise InputError(f"export.viewer.zoom {list(zoom)}: {tiles:,} tiles per layer over {area.declared} "
                         f"(more than {MAX_VIEWER_TILES:,}); narrow the zoom range, or browse it with instarun serve")


def _check_size(area, resolution: float, size: int, stride: int, classes: int, source: str, fix: str) -> int:
    """Refuse, before reading anything, areas that would take hours or a strip that would not
    fit in memory. Width along the middle latitude on a plane (a great circle from -180 to
    180 degrees is 0 km long)."""
    from instageo.data.split import KM_PER_DEGREE

    west, south, east, north = area
    middle = math.radians((south + north) / 2)
    width = max((east - west) * KM_PER_DEGREE * max(math.cos(middle), 0.01) * 1000 / resolution, size)
    height = max((north - south) * KM_PER_DEGREE * 1000 / resolution, size)
    tiles = math.ceil((width - size) / stride + 1) * math.ceil((height - size) / stride + 1)
    strip_bytes = (classes + 1 + 3) * size * width * 4
    problem = (f"{width * height:,.0f} pixels, more than {MAX_AREA_PIXELS:,}" if width * height > MAX_AREA_PIXELS
               else f"{tiles:,} tiles, more than {MAX_TILES:,}" if tiles > MAX_TILES
               else f"{width:,.0f} pixels wide: a row of tiles needs {strip_bytes / 2**30:.1f} GiB"
               if strip_bytes > MAX_STRIP_BYTES else None)
    if problem:
        raise InputError(f"prediction area ({source}: {width:,.0f} x {height:,.0f} pixels at {resolution:g} m) "
                         f"is too large ({problem}); {fix}")
    return tiles


def _observations(search: StageResult) -> list[dict]:
    with open(search.path("observations"), newline="") as handle:
        return list(csv.DictReader(handle))


def _extent(observations: list[dict], recipe: Recipe) -> tuple[float, float, float, float]:
    from instageo.data.observations import Observation

    boxes = [chip_extent(Observation(o["id"], float(o["lon"]), float(o["lat"]),
                                     dt.date.fromisoformat(o["date"])), recipe) for o in observations]
    return union_boxes(boxes)


def _features(path: Path, field: str) -> list[tuple[str, object]]:
    """(name, geometry) of each feature of a GeoJSON file (lon/lat); a feature's name is its
    'name' property, else its position."""
    from shapely.geometry import shape

    try:
        document = json.loads(Path(path).read_text())
        features = document.get("features") or [document]
        shapes = [shape(f.get("geometry", f)) for f in features]
        names = [str((f.get("properties") or {}).get("name") or f"area{i + 1}") for i, f in enumerate(features)]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{field}: {path}: not a readable GeoJSON area ({exc})") from None
    return list(zip(names, shapes))


def _areas_from(path: Path) -> list[Area]:
    """export.predict.areas as a GeoJSON file: one area per feature, named by it."""
    field = "export.predict.areas"
    features = _features(path, field)
    names = [name for name, _ in features]
    for name, geometry in features:
        if geometry.is_empty or geometry.area == 0:
            raise InputError(f"{field}: {path}: feature '{name}' has no polygon with an area")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or names.count(name) > 1:
            raise InputError(f"{field}: {path}: feature name '{name}' must be unique and made of letters, "
                             "digits, '_', '.', '-' (it names the area's folder)")
    return [Area(name, geometry.bounds, geometry, f"{field}: {name}") for name, geometry in features]


def _outline(path: Path):
    """The union of a GeoJSON file's geometries (lon/lat)."""
    from shapely.ops import unary_union

    geometry = unary_union([g for _, g in _features(path, "export.predict.geojson")])
    if geometry.is_empty or geometry.area == 0:
        raise InputError(f"export.predict.geojson: {path}: has no polygon with an area")
    return geometry


def _project(geometry, crs: str):
    import shapely
    from pyproj import Transformer

    return shapely.transform(geometry, Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform,
                             interleaved=False)


def _items(recipe: Recipe, search: StageResult, area, date: dt.date,
           ctx: StageContext) -> tuple[dict[str, dict], str]:
    """The search stage's items if, at every step, they cover the area; else a fresh search
    of the catalogue. Returns the items by id and where they came from."""
    from shapely.geometry import box, shape
    from shapely.ops import unary_union

    known = json.loads(search.path("items").read_text())
    spec = recipe.export.predict
    if spec.bbox is None and spec.geojson is None and spec.date is None:
        return known, "search"  # the observations' own extent and dates: what the search served
    steps = candidates_for(list(known.values()), date, recipe.data.chips.time)
    footprints = [unary_union([shape(known[c.id]["geometry"]) for c in step]) if step else None
                  for step in steps]
    if all(f is not None and f.covers(box(*area)) for f in footprints):
        return known, "search"
    catalogue = open_catalogue(recipe, search.dir)
    ctx.log.info("the search stage's items do not cover the prediction area at %s: searching %s",
                 date, catalogue.name)
    found = search_area(catalogue, area, date, recipe)
    if not found:
        raise InputError(f"prediction: {catalogue.name} has no items for the area "
                         f"{tuple(round(v, 5) for v in area)} around {date}")
    return found, catalogue.name



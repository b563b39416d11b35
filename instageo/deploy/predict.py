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
from pathlib import Path

from instageo.data.chips import candidates_for
from instageo.data.grid import boxes_touch, union_boxes
from instageo.data.search import chip_extent, open_catalogue, search_area
from instageo.deploy.maps import executor_of, predict_map
from instageo.engine.bundle import read_bundle
from instageo.engine import runtime
from instageo.engine.tiling import Area, TileSpec, Tiling, check_area_size, tile_area
from instageo.errors import InputError
from instageo.files import write_json_atomic
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult


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


def plan_tiles(recipe: Recipe, search: StageResult, classes: int, ctx: StageContext, area: Area | None = None,
               spec: TileSpec | None = None) -> Tiling:
    """The predict stage's tiling: the area and date the recipe says (default: the
    observations' extent and latest date), read from the search stage's items when they
    cover it. ``spec``: the recipe's TileSpec, when the caller has made it."""
    observations = _observations(search)
    area = area or areas_of(recipe, search)[0]
    date = recipe.export.predict.date or max(dt.date.fromisoformat(o["date"]) for o in observations)
    spec = spec or TileSpec.of_recipe(recipe)
    check_area_size(spec, area, classes)
    items, items_from = _items(recipe, search, area.bbox, date, ctx)
    return tile_area(spec, area, date, items, items_from, search.dir, ctx.log)


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """A student's prediction (the `predict` stage)."""
    return predict(recipe, inputs["search"], inputs["export"], ctx)


def run_teacher(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """The teacher's prediction over the same areas (the `teacher_predict` stage)."""
    return predict(recipe, inputs["search"], inputs["teacher_export"], ctx)


def predict(recipe: Recipe, search: StageResult, export: StageResult, ctx: StageContext) -> StageOutput:
    """Every area with the exported model of ``export``. One area: its COGs at the stage's
    root; several (export.predict.areas): areas/<name>/*.tif each, and an index areas.geojson."""
    bundle = read_bundle(export.path("bundle").parent)
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


def predict_area(recipe: Recipe, search: StageResult, export: StageResult, bundle: dict, area: Area,
                 folder: Path, ctx: StageContext) -> tuple[dict[str, str], dict, dict | None]:
    """One area's COGs in ``folder``: (files, summary, the items of a fresh search or None)."""
    spec = TileSpec.of_recipe(recipe)
    tiling = plan_tiles(recipe, search, len(bundle["classes"]), ctx, area, spec)
    model, why = runtime.choose_model(bundle, recipe.export.predict.int8_tolerance_pp)
    ctx.log.info("predicting with %s (%s)", model, why)
    started = time.perf_counter()
    files, summary = predict_map(spec, tiling, export.path("onnx").parent / model, bundle, folder, ctx.track, ctx.log,
                                 executor_of(recipe.export.predict))
    timing = {"seconds": round(time.perf_counter() - started, 3), "cores": os.cpu_count() or 1,
              "device": "gpu" if runtime.gpu_present() else "cpu",
              "resolution_m": recipe.data.chips.resolution}  # what runner.cost turns into CPU- or GPU-hours
    return (files, {**summary, "model": model, "model_why": why, **timing},
            tiling.items if tiling.items_from != "search" else None)


def check_areas(recipe: Recipe, observations: list | None) -> None:
    """Plan-time checks, before any training: every area to predict over is under the size
    limits (the default area, the observations' extent, too: spread over continents, it
    asks for export.predict.bbox) and, for a local catalogue, overlaps its items."""
    spec = recipe.export.predict
    if spec.areas is not None or spec.bbox or spec.geojson:
        areas = areas_of(recipe, None)
    elif observations:
        areas = [Area("area", union_boxes(chip_extent(o, recipe.data.chips) for o in observations))]
    else:
        return  # the demo's or label rasters' extent: known after the search stage
    spec = TileSpec.of_recipe(recipe)
    for area in areas:
        check_area_size(spec, area, len(recipe.task.classes))
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


def _observations(search: StageResult) -> list[dict]:
    with open(search.path("observations"), newline="") as handle:
        return list(csv.DictReader(handle))


def _extent(observations: list[dict], recipe: Recipe) -> tuple[float, float, float, float]:
    from instageo.data.observations import Observation

    boxes = [chip_extent(Observation(o["id"], float(o["lon"]), float(o["lat"]),
                                     dt.date.fromisoformat(o["date"])), recipe.data.chips) for o in observations]
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
    catalogue = open_catalogue(recipe.data.source, search.dir)
    ctx.log.info("the search stage's items do not cover the prediction area at %s: searching %s",
                 date, catalogue.name)
    found = search_area(catalogue, area, date, recipe.data.source, recipe.data.chips)
    if not found:
        raise InputError(f"prediction: {catalogue.name} has no items for the area "
                         f"{tuple(round(v, 5) for v in area)} around {date}")
    return found, catalogue.name



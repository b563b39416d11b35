"""The `search` stage: for every observation, the catalogue items that could serve its chip.

Observations are grouped by 1-degree cell and by date (at most ``GROUP_DAYS`` apart), one
STAC query per group, all groups queried concurrently. Each observation then keeps the items
whose footprint meets its chip and whose date falls in its own window (``steps`` back from
its date, ``step_days`` apart, plus ``tolerance_days``). The chips stage picks among them.

Outputs: observations.csv (normalised), items.json (per item: date, cloud cover, footprint,
href/scale/offset/nodata per band, mask), candidates.json (observation id -> item ids).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from instageo.data.catalogue import (ApiCatalogue, LocalCatalogue, PinnedCatalogue, Query, footprint, item_date,
                                     lonlat_box)
from instageo.data.grid import union_boxes
from instageo.data.lock import LockedSearch, content_sha256, lock_for, read_lock, update_lock
from instageo.data.observations import Labels, Observation, read_points, read_polygons, read_rasters
from instageo.recipe.presets import Preset, finite_json, preset_for
from instageo.errors import DataSourceError
from instageo.files import write_json_atomic
from instageo.recipe.models import ChipSpec, Recipe, Source, TimeSpec
from instageo.runner.stage import StageContext, StageOutput, StageResult

GROUP_DAYS = 60  # observations further apart in time get a query of their own
METRES_PER_DEGREE = 111_320.0
QUERY_THREADS = 4
POLYGONS = "polygons.geojson"  # labelled polygons in lon/lat, when observations are polygons


@dataclass(frozen=True)
class Group:
    observations: tuple[Observation, ...]
    query: Query


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    source = recipe.data.source
    preset = preset_for(source)
    if preset is None:
        raise DataSourceError(
            f"data.source: no preset known for {source.url} {source.collections}; set "
            "data.source.preset or data.source.bands (common band name -> asset key)"
        )
    catalogue, observations = _open_source(recipe, ctx)
    lock_file = lock_for(recipe, ctx.run_dir)
    if lock_file is not None and lock_file.parent == Path(ctx.run_dir):
        ctx.log.info("--set changed the recipe's data: its scenes are pinned in %s, not beside the recipe",
                     lock_file)
    lock = read_lock(lock_file) if lock_file and not ctx.forced else None
    if lock is not None and lock.search is not None and lock.search.key == ctx.key:
        ctx.log.info("using %d items pinned in %s (no catalogue request)", len(lock.search.items), lock_file)
        catalogue = PinnedCatalogue(lock.search.items, lock.search.catalogue)
    raw_items, candidates = _query(catalogue, observations, recipe, preset, ctx)
    resolved = {i: preset.resolve(item, recipe.data.chips.bands).as_dict() for i, item in raw_items.items()}
    _write_observations(ctx.workdir / "observations.csv", observations)
    # compact: these grow with the observations (indented JSON is 5x slower to write); the
    # items finite (STAC's "nan"), so the lock made from them holds what its checksum covers
    write_json_atomic(ctx.workdir / "stac_items.json", [finite_json(raw_items[i]) for i in sorted(raw_items)],
                      indent=None)
    write_json_atomic(ctx.workdir / "items.json", resolved, indent=None)
    write_json_atomic(ctx.workdir / "candidates.json", candidates, indent=None)
    without = sum(1 for o in observations if not candidates.get(o.id))
    files = {"observations": "observations.csv", "items": "items.json",
             "candidates": "candidates.json", "stac_items": "stac_items.json"}
    if (ctx.workdir / POLYGONS).exists():
        files["polygons"] = POLYGONS
    return StageOutput(
        files=files,
        summary={"search": {"catalogue": catalogue.name, "preset": preset.name,
                            "observations": len(observations), "items": len(raw_items),
                            "observations_without_items": without}},
    )


def after(recipe: Recipe, result: StageResult) -> None:
    """Pin the items this search used in the recipe's lock file."""
    if recipe.path is None:
        return
    import json

    items = json.loads(result.path("stac_items").read_text())
    search = LockedSearch(key=result.key, catalogue=result.summary["search"]["catalogue"],
                          items=items, sha256=content_sha256(items))
    update_lock(lock_for(recipe, result.dir.parent.parent), recipe.name, replace_bad=True, search=search)


def demo_scene(source, folder: Path):
    """A `demo` source's scene, generated into ``folder``/scene, where ``open_catalogue``
    finds it (its hrefs relative to ``folder``)."""
    from instageo.data import demo

    return demo.generate(folder / "scene", source.seed, source.size, source.acquisitions, source.points)


def _open_source(recipe: Recipe, ctx: StageContext):
    source, spec = recipe.data.source, recipe.data.observations
    observations = None
    if source.kind == "demo":
        scene = demo_scene(source, ctx.workdir)  # in the stage folder
        observations = read_points(scene.observations, labels=Labels.of(recipe)) if spec is None else None
    catalogue = open_catalogue(recipe.data.source, ctx.workdir)
    if spec is not None and spec.kind == "points":
        observations = read_points(spec.path, spec.x, spec.y, spec.date, spec.label, spec.crs, spec.dates,
                                   Labels.of(recipe, spec.remap), spec.time)
    elif spec is not None and spec.kind == "polygons":
        observations = read_polygons(spec, Labels.of(recipe, spec.remap), ctx.workdir / POLYGONS)
    elif spec is not None:
        observations = read_rasters(spec)
    return catalogue, observations


def open_catalogue(source: Source, search_dir: Path):
    """The catalogue of a data.source (the demo scene lives in the search stage's folder)."""
    if source.kind == "demo":
        return LocalCatalogue(search_dir / "scene" / "catalog.json", name="demo", relative_to=search_dir)
    if source.kind == "catalog":
        return LocalCatalogue(source.path)
    return ApiCatalogue(source.url, retries=source.retries, timeout=source.timeout)


def search_area(catalogue, bbox: tuple[float, float, float, float], date: dt.date, source: Source,
                chips: ChipSpec) -> dict[str, dict]:
    """Resolved items for every step of a chip dated ``date`` anywhere in ``bbox``: the query
    the search stage would make for an observation there (the predict stage uses it for an
    area or a date the observations did not cover)."""
    preset = preset_for(source)
    collections = tuple(getattr(source, "collections", None) or ()) or None
    start, end = window(date, chips.time)
    query = Query(bbox, start, end, collections, getattr(source, "max_cloud_cover", 100.0))
    bands = chips.bands
    return {item["id"]: preset.resolve(_trim(item, preset, bands), bands).as_dict()
            for item in catalogue.search(query)}


def _query(catalogue, observations: list[Observation], recipe: Recipe, preset: Preset,
           ctx: StageContext) -> tuple[dict[str, dict], dict[str, list[str]]]:
    groups = group_observations(observations, recipe)
    with ThreadPoolExecutor(QUERY_THREADS) as pool:
        found = list(ctx.track(pool.map(catalogue.search, [g.query for g in groups]),
                               total=len(groups), description="catalogue queries"))
    raw_items: dict[str, dict] = {}
    candidates: dict[str, list[str]] = {}
    footprints: dict[str, Any] = {}  # item id -> geometry, made once (groups share items)
    for group, items in zip(groups, found):
        if not items:
            ctx.log.warning("no items for %d observation(s) near (%.3f, %.3f): %s",
                            len(group.observations), group.observations[0].lon,
                            group.observations[0].lat, group.query.describe())
        for observation, chosen in zip(group.observations, serving(items, group.observations, recipe, footprints)):
            candidates[observation.id] = [item["id"] for item in chosen]
            for item in chosen:
                if item["id"] not in raw_items:
                    raw_items[item["id"]] = _trim(item, preset, recipe.data.chips.bands)
    if not raw_items:
        raise DataSourceError(
            f"{catalogue.name}: no items for any of {len(observations)} observation(s) in "
            f"{len(groups)} group(s), e.g. {groups[0].query.describe()}"
        )
    return raw_items, candidates


def group_observations(observations: list[Observation], recipe: Recipe) -> list[Group]:
    cells: dict[tuple[int, int], list[Observation]] = defaultdict(list)
    for observation in observations:
        cells[(math.floor(observation.lon), math.floor(observation.lat))].append(observation)
    source = recipe.data.source
    collections = tuple(getattr(source, "collections", None) or ()) or None
    max_cloud = getattr(source, "max_cloud_cover", 100.0)
    groups = []
    for _, members in sorted(cells.items()):
        members.sort(key=lambda o: (o.date, o.id))
        batch: list[Observation] = []
        for observation in members + [None]:  # type: ignore[list-item]
            if batch and (observation is None or (observation.date - batch[0].date).days > GROUP_DAYS):
                start = window(batch[0].date, recipe.data.chips.time)[0]
                end = window(batch[-1].date, recipe.data.chips.time)[1]
                bbox = union_boxes(chip_extent(o, recipe.data.chips) for o in batch)
                groups.append(Group(tuple(batch), Query(bbox, start, end, collections, max_cloud)))
                batch = []
            if observation is not None:
                batch.append(observation)
    return groups


def window(date: dt.date, time: TimeSpec) -> tuple[dt.date, dt.date]:
    """The dates whose acquisitions may serve an observation on ``date``."""
    first = date - dt.timedelta(days=(time.steps - 1) * time.step_days + time.tolerance_days)
    return first, date + dt.timedelta(days=time.tolerance_days)


def chip_extent(observation: Observation, chips: ChipSpec) -> tuple[float, float, float, float]:
    """Lon/lat box around an observation's chip (generous: half a chip, its largest shift
    and a pixel)."""
    half = (chips.size / 2 + chips.max_shift + 1) * chips.resolution
    dlat = half / METRES_PER_DEGREE
    dlon = half / (METRES_PER_DEGREE * max(math.cos(math.radians(observation.lat)), 0.01))
    west, south, east, north = observation.extent
    return (west - dlon, south - dlat, east + dlon, north + dlat)


def serving(items: list[dict], observations: Sequence[Observation], recipe: Recipe,
            footprints: dict[str, Any] | None = None) -> list[list[dict]]:
    """For each observation, the items (in their order) dated in its window whose footprint
    meets its chip: the footprints (memoised in ``footprints``) in an STRtree, all chips
    queried at once."""
    import numpy as np
    import shapely

    if not items or not observations:
        return [[] for _ in observations]
    footprints = {} if footprints is None else footprints
    for item in items:
        if item["id"] not in footprints:
            footprints[item["id"]] = footprint(item)
    tree = shapely.STRtree([footprints[item["id"]] for item in items])
    extents = np.array([chip_extent(o, recipe.data.chips) for o in observations])
    chips = shapely.box(*extents.T)
    for i in np.flatnonzero((extents[:, 0] < -180) | (extents[:, 2] > 180)):
        chips[i] = lonlat_box(*extents[i])
    chip_of, item_of = tree.query(chips, predicate="intersects")
    dates = np.array([(item_date(item) or dt.date.min).toordinal() for item in items])
    windows = np.array([[d.toordinal() for d in window(o.date, recipe.data.chips.time)] for o in observations])
    keep = (dates[item_of] >= windows[chip_of, 0]) & (dates[item_of] <= windows[chip_of, 1])
    chip_of, item_of = chip_of[keep], item_of[keep]
    order = np.lexsort((item_of, chip_of))
    chosen: list[list[dict]] = [[] for _ in observations]
    for chip, item in zip(chip_of[order].tolist(), item_of[order].tolist()):
        chosen[chip].append(items[item])
    return chosen


def _trim(item: dict[str, Any], preset: Preset, bands: list[str]) -> dict[str, Any]:
    """The item with only the assets the recipe reads and the properties presets use."""
    keys = preset.asset_keys(item.get("collection", ""), bands)
    keep = ("datetime", "start_datetime", "eo:cloud_cover", "s2:processing_baseline", "proj:epsg")
    return {
        "id": item["id"], "collection": item.get("collection"), "bbox": item.get("bbox"),
        "geometry": item["geometry"],
        "properties": {k: v for k, v in item.get("properties", {}).items() if k in keep},
        "assets": {k: {f: v for f, v in a.items() if f in ("href", "raster:bands", "eo:bands", "type")}
                   for k, a in item.get("assets", {}).items() if k in keys},
    }


def _write_observations(path: Path, observations: list[Observation]) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "kind", "lon", "lat", "date", "label", "west", "south", "east", "north", "source",
                         "time"])
        for o in observations:
            extent = o.bbox or ("", "", "", "")
            writer.writerow([o.id, o.kind, f"{o.lon:.7f}", f"{o.lat:.7f}", o.date.isoformat(),
                             "" if o.label is None else o.label, *extent, o.source or "", o.time or ""])

"""`instarun catalog build`: a folder of rasters -> a local static STAC catalogue.

Files are grouped into scenes by name: ``<scene>_<asset>.<ext>`` (the last underscore splits
them), so ``T33UUU_20170216T102101_B04.jp2`` is asset ``B04`` of scene
``T33UUU_20170216T102101`` and ``Spain_7370579_S1Hand.tif`` is asset ``S1Hand`` of scene
``Spain_7370579``. A multi-band file keeps its band names (from the file's band descriptions)
in ``eo:bands``, so a recipe can name a band inside it as ``S1Hand#VV``. Each scene's date
comes from ``--datetime``, a ``--dates`` CSV (scene,date), a ``--date-pattern`` regex with
named groups (year, month, day or year, doy), or the built-in patterns for Sentinel-2 tile
names (``YYYYMMDDTHHMMSS``), HLS names (``YYYYDDDTHHMMSS``), Landsat scene ids
(``LE7PPPRRRYYYYDDD``, ``LC08_L2SP_PPPRRR_YYYYMMDD``) and plain ``YYYYMMDD``. HLS file names
(``HLS.S30.T33UUU.2021001T101010.v2.0.B04.tif``) split at their last dot instead.

The sensor is detected from the file names (or given with ``--preset``) and written into
catalog.json as ``instageo:preset``, so a recipe reads B08 as Sentinel-2's NIR and b4 as
Landsat TM's: Sentinel-2 L1C / L2A band files, HLS L30 / S30, Landsat Collection 2 Level-2
(TM/ETM+ or OLI) and ESPA surface reflectance. ``--scale`` / ``--offset`` / ``--nodata`` are
written as every asset's ``raster:bands`` values, which readers honour.
"""

from __future__ import annotations

import csv
import datetime as dt
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from instageo.errors import InputError

log = logging.getLogger("instageo.catalog")

RASTER_SUFFIXES = {".tif", ".tiff", ".jp2"}
DATE_PATTERNS = (
    r"(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})T\d{6}",  # Sentinel-2 product/tile names
    r"(?<!\d)(?P<year>\d{4})(?P<doy>\d{3})T\d{6}",  # HLS: YYYYDDDTHHMMSS
    r"L[CEOTM]\d\d{6}(?P<year>\d{4})(?P<doy>\d{3})",  # Landsat scene ids: LE7 PPPRRR YYYY DDD
    r"(?<!\d)(?P<year>(?:19|20)\d{2})-?(?P<month>[01]\d)-?(?P<day>[0-3]\d)(?!\d)",
)


@dataclass
class BuildResult:
    catalog: Path
    items: int
    assets: dict[str, list[str]] = field(default_factory=dict)  # asset key -> band names
    skipped: list[str] = field(default_factory=list)
    preset: str | None = None  # the sensor preset written into the catalogue


def scene_and_asset(path: Path) -> tuple[str, str]:
    if path.stem.startswith("HLS."):  # HLS.S30.T33UUU.2021001T101010.v2.0.B04
        scene, _, asset = path.stem.rpartition(".")
        return scene, asset
    scene, sep, asset = path.stem.rpartition("_")
    return (scene, asset) if sep else (path.stem, "data")


S2_ASSETS = {"B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"}


def detect_preset(scenes: dict[str, dict[str, Path]]) -> str | None:
    """The sensor preset the scenes' file names say, when they all say the same; else None."""
    found = {_preset_of(scene, set(assets), " ".join(str(p) for p in assets.values()))
             for scene, assets in scenes.items()}
    return found.pop() if len(found) == 1 else None


def _preset_of(scene: str, assets: set[str], paths: str) -> str | None:
    if scene.startswith("HLS.L30."):
        return "hls-l30"
    if scene.startswith("HLS.S30."):
        return "hls-s30"
    if assets & S2_ASSETS and assets <= S2_ASSETS | {"SCL", "TCI", "AOT", "WVP"}:
        return "s2-l2a" if "SCL" in assets or "MSIL2A" in paths or "L2A" in scene else "s2-l1c"
    if re.match(r"L[CEOTM]0[4-9]_L2S[PR]_", scene) and any(a.startswith("SR_B") for a in assets):
        return "landsat-c2-l2-oli" if scene[2:4] in ("08", "09") else "landsat-c2-l2-tm"
    if re.match(r"L[ET][4-7]\d{6}\d{7}", scene) and assets & {f"b{n}" for n in range(1, 8)}:
        return "landsat-espa-sr"  # e.g. LE70350322008118EDC00_b3.tif
    return None


def date_of(scene: str, text: str, pattern: str | None = None) -> dt.date | None:
    for regex in [pattern] if pattern else DATE_PATTERNS:
        match = re.search(regex, text)
        if not match:
            continue
        parts = match.groupdict()
        try:
            if parts.get("doy"):
                return dt.date(int(parts["year"]), 1, 1) + dt.timedelta(days=int(parts["doy"]) - 1)
            return dt.date(int(parts["year"]), int(parts["month"]), int(parts["day"]))
        except (KeyError, TypeError, ValueError):
            continue
    return None


def read_dates(path: Path) -> dict[str, dt.date]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        return {row["scene"]: dt.date.fromisoformat(row["date"][:10]) for row in rows}
    except (KeyError, ValueError) as exc:
        raise InputError(f"{path}: needs columns scene,date (YYYY-MM-DD): {exc}") from None


def build_catalog(folder: Path, out: Path, collection: str = "local", datetime: dt.date | None = None,
                  date_pattern: str | None = None, dates: dict[str, dt.date] | None = None,
                  preset: str | None = None, scaling: dict[str, float] | None = None) -> BuildResult:
    """``preset``: the sensor (default: detected from the file names); ``scaling``: scale,
    offset and nodata written as every band's raster:bands values."""
    import pystac
    import rasterio
    from rasterio.errors import RasterioIOError
    from rasterio.warp import transform_bounds
    from shapely.geometry import box, mapping

    folder, out = Path(folder).resolve(), Path(out).resolve()
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder")
    scenes: dict[str, dict[str, Path]] = defaultdict(dict)
    for path in sorted(folder.rglob("*")):
        if path.suffix.lower() in RASTER_SUFFIXES and out not in path.parents:
            scene, asset = scene_and_asset(path)
            scenes[scene][asset] = path
    if not scenes:
        raise InputError(f"{folder}: no rasters ({', '.join(sorted(RASTER_SUFFIXES))}) found")
    from instageo.recipe.presets import CATALOGUE_PRESET, PRESETS, stac_nodata

    if preset is not None and preset not in PRESETS:
        raise InputError(f"--preset {preset}: not valid, should be one of {sorted(PRESETS)}")
    result = BuildResult(out / "catalog.json", 0, preset=preset or detect_preset(scenes))
    written = {k: stac_nodata(v) if k == "nodata" else v for k, v in (scaling or {}).items()}
    stac_collection = pystac.Collection(
        collection, f"Scenes from {folder.name}, catalogued by instarun catalog build",
        pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])),
    )
    for scene, assets in sorted(scenes.items()):
        when = datetime or (dates or {}).get(scene) or date_of(
            scene, str(next(iter(assets.values())).relative_to(folder)), date_pattern)
        if when is None:
            raise InputError(f"{scene}: no date in its name; give --datetime, --dates or --date-pattern")
        extents, stac_assets = [], {}
        for key, path in sorted(assets.items()):
            try:
                with rasterio.open(path) as dataset:
                    if dataset.crs is None:
                        raise RasterioIOError("no CRS")
                    extents.append(transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds))
                    names = [d or f"b{i}" for i, d in enumerate(dataset.descriptions, start=1)]
                    stac_assets[key] = pystac.Asset(str(path), roles=["data"], extra_fields={
                        "eo:bands": [{"name": n} for n in names],
                        "raster:bands": [{"nodata": stac_nodata(dataset.nodata), "data_type": t, **written}
                                         for t in dataset.dtypes],
                        "proj:epsg": dataset.crs.to_epsg(), "proj:shape": list(dataset.shape),
                        "proj:transform": list(dataset.transform)[:6],
                    })
                    result.assets.setdefault(key, names)
            except RasterioIOError as exc:
                log.warning("skipping %s: not a readable georeferenced raster (%s)", path, exc)
                result.skipped.append(str(path))
        if not stac_assets:
            continue
        bounds = (min(e[0] for e in extents), min(e[1] for e in extents),
                  max(e[2] for e in extents), max(e[3] for e in extents))
        item = pystac.Item(scene, mapping(box(*bounds)), list(bounds),
                           dt.datetime.combine(when, dt.time(0, 0), dt.timezone.utc), {})
        for key, asset in stac_assets.items():
            item.add_asset(key, asset)
        stac_collection.add_item(item)
        result.items += 1
    stac_collection.update_extent_from_items()
    catalog = pystac.Catalog(f"{collection}-catalog", f"Local catalogue of {folder}",
                             extra_fields={CATALOGUE_PRESET: result.preset} if result.preset else None)
    catalog.add_child(stac_collection)
    catalog.normalize_hrefs(str(out))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return result

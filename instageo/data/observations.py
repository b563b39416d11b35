"""Observations: what the user labelled, where and when, read into one record type.

Points come from a CSV (one row per observation); label rasters each become one observation
covering the raster's footprint. Bad rows are errors naming the file and line: a dataset
built from silently dropped rows is a wrong dataset.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from instageo.errors import InputError
from instageo.recipe.models import DateRange, PolygonObservations, RasterObservations


@dataclass(frozen=True)
class Observation:
    id: str
    lon: float
    lat: float
    date: dt.date
    label: float | None = None
    bbox: tuple[float, float, float, float] | None = None  # lon/lat extent of a label raster
    source: str | None = None  # the label raster's path, or the polygons file's name
    kind: str = "point"  # point | raster | polygon

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return self.bbox or (self.lon, self.lat, self.lon, self.lat)


@dataclass(frozen=True)
class _Columns:
    x: str
    y: str
    date: str
    label: str
    crs: str


def read_points(path: Path, x: str = "x", y: str = "y", date: str = "date", label: str = "label",
                crs: str = "EPSG:4326", dates: DateRange | None = None) -> list[Observation]:
    """Point observations from a CSV; ``dates`` keeps only those inside the window."""
    path = Path(path)
    spec = _Columns(x, y, date, label, crs)
    try:
        handle = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read observations: {exc.strerror}") from None
    with handle:
        columns, rows = _csv_rows(handle, path)
    missing = [c for c in (spec.x, spec.y, spec.date) if c not in columns]
    if missing:
        raise InputError(f"{path}:1: missing column(s) {missing}; the file has {columns}")
    to_lonlat = _to_lonlat(spec.crs, path)
    observations = []
    seen: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    for line, row in rows:
        observation = _point(row, line, spec, path, to_lonlat)
        if dates and not (dates.start <= observation.date <= dates.end):
            continue
        # a repeated row would weigh twice in training and could land in two splits
        signature = (observation.lon, observation.lat, observation.date, observation.label)
        if signature in seen:
            raise InputError(f"{path}:{line}: duplicate of line {seen[signature]}")
        if observation.id in ids:  # chips and candidates are keyed by id
            raise InputError(f"{path}:{line}: id '{observation.id}' already used on line {ids[observation.id]}")
        seen[signature] = ids[observation.id] = line
        observations.append(observation)
    if not observations:
        raise InputError(f"{path}: no observations" + (" in the recipe's date window" if dates else ""))
    return observations


def _csv_rows(handle, path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The header and the (line, row) pairs of a CSV; a row with more cells than the header
    is an error (its extra cells would be dropped silently)."""
    try:
        reader = csv.DictReader(handle)
        columns = list(reader.fieldnames or [])
        rows = [(reader.line_num, row) for row in reader]  # line_num: blank lines counted
    except (csv.Error, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable UTF-8 CSV: {exc}") from None
    for line, row in rows:
        if None in row:
            raise InputError(f"{path}:{line}: {len(columns) + len(row[None])} cells, "
                             f"but the header has {len(columns)}")
    return columns, rows


def _in_world(lon: float, lat: float) -> bool:
    return -180 <= lon <= 180 and -90 <= lat <= 90


def _point(row: dict, line: int, spec: _Columns, path: Path, to_lonlat) -> Observation:
    def field(name: str) -> str:
        value = (row.get(name) or "").strip()
        if not value:
            raise InputError(f"{path}:{line}: column '{name}' is empty")
        return value

    try:
        x, y = float(field(spec.x)), float(field(spec.y))
    except ValueError:
        raise InputError(f"{path}:{line}: coordinates must be numbers, got "
                         f"{row.get(spec.x)!r}, {row.get(spec.y)!r}") from None
    lon, lat = to_lonlat(x, y)
    if not _in_world(lon, lat):
        raise InputError(f"{path}:{line}: coordinates ({x}, {y}) are outside the world "
                         f"in {spec.crs} (lon {lon:.3f}, lat {lat:.3f})")
    text = field(spec.date)
    try:
        date = dt.date.fromisoformat(text[:10])
    except ValueError:
        raise InputError(f"{path}:{line}: date '{text}' is not YYYY-MM-DD") from None
    label = None
    if spec.label in row and (row[spec.label] or "").strip():
        try:
            label = float(row[spec.label])
        except ValueError:
            label = math.nan
        if not math.isfinite(label):
            raise InputError(f"{path}:{line}: label '{row[spec.label]}' is not a number") from None
    identifier = (row.get("id") or "").strip() or f"{path.stem}-{line}"
    return Observation(identifier, lon, lat, date, label)


def _to_lonlat(crs: str, path: Path):
    if crs.upper() in ("EPSG:4326", "WGS84", "OGC:CRS84"):
        return lambda x, y: (x, y)
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        transformer = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    except CRSError:
        raise InputError(f"{path}: crs '{crs}' is not a known coordinate reference system") from None
    return transformer.transform


def read_rasters(spec: RasterObservations) -> list[Observation]:
    """One observation per label raster, covering its footprint; date from the recipe."""
    import rasterio
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import CRSError, RasterioError
    from rasterio.warp import transform_bounds

    dates = _raster_dates(spec.dates) if spec.dates else {}
    observations = []
    for path in spec.paths:
        date = dates.get(Path(path).name) or dates.get(Path(path).stem) or spec.date
        if date is None:
            raise InputError(f"{path}: no date: give data.observations.date, or a row in "
                             f"data.observations.dates")
        try:
            with rasterio.open(path) as dataset:
                if dataset.crs is None:
                    raise InputError(f"{path}: label raster has no CRS")
                bounds = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
        except (RasterioError, CPLE_BaseError, CRSError) as exc:
            raise InputError(f"{path}: not a readable raster ({str(exc).splitlines()[0]})") from None
        lon, lat = (bounds[0] + bounds[2]) / 2, (bounds[1] + bounds[3]) / 2
        if not (_in_world(*bounds[:2]) and _in_world(*bounds[2:])):
            raise InputError(f"{path}: footprint {dataset.bounds} in {dataset.crs} is outside the "
                             "world in lon/lat; is the raster's CRS right?")
        observations.append(Observation(Path(path).stem, lon, lat, date, None, bounds, str(path), "raster"))
    return observations


def _raster_dates(path: Path) -> dict[str, dt.date]:
    with open(path, newline="", encoding="utf-8-sig") as handle:
        _, rows = _csv_rows(handle, path)
    dates = {}
    for line, row in rows:
        try:
            dates[row["file"].strip()] = dt.date.fromisoformat(row["date"].strip()[:10])
        except (KeyError, AttributeError, ValueError):
            raise InputError(f"{path}:{line}: needs columns file,date with date as YYYY-MM-DD") from None
    return dates


def read_polygons(spec: PolygonObservations, classes: list[str], out: Path) -> list[Observation]:
    """One observation per polygon, at its centroid, labelled with its class index. The
    polygons are also written to ``out`` (GeoJSON, lon/lat, property ``class``) for rasterising."""
    import json

    import shapely
    from shapely.geometry import mapping, shape

    path = Path(spec.path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        features = document["features"]
        if not isinstance(features, list) or not all(isinstance(f, dict) for f in features):
            raise TypeError(features)
    except (OSError, ValueError, KeyError, TypeError):
        raise InputError(f"{path}: not a GeoJSON FeatureCollection") from None
    try:
        crs = spec.crs or document.get("crs", {}).get("properties", {}).get("name", "EPSG:4326")
        crs = crs.replace("urn:ogc:def:crs:", "").replace("::", ":")
    except AttributeError:
        raise InputError(f"{path}: 'crs' is not a GeoJSON crs object with properties.name") from None
    to_lonlat = _to_lonlat(crs, path)
    observations, polygons = [], []
    for index, feature in enumerate(features):
        where = f"{path}: feature {index}"
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise InputError(f"{where}: properties is not an object")
        try:
            geometry = shapely.transform(shape(feature["geometry"]), to_lonlat, interleaved=False)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise InputError(f"{where}: no valid geometry") from None
        if geometry.is_empty:
            raise InputError(f"{where}: empty geometry")
        if not (_in_world(*geometry.bounds[:2]) and _in_world(*geometry.bounds[2:])):
            raise InputError(f"{where}: coordinates outside the world in {crs}")
        value = properties.get(spec.label)
        if value in classes:
            label = classes.index(value)
        elif isinstance(value, (int, float)) and 0 <= value < len(classes):
            label = int(value)
        else:
            raise InputError(f"{where}: {spec.label} {value!r} is not one of task.classes {classes}")
        try:
            date = dt.date.fromisoformat(str(properties.get(spec.date, ""))[:10])
        except ValueError:
            raise InputError(f"{where}: {spec.date} {properties.get(spec.date)!r} is not YYYY-MM-DD") from None
        centre = geometry.representative_point()
        identifier = f"{path.stem}-{index:05d}"
        observations.append(Observation(identifier, centre.x, centre.y, date, float(label), None, out.name, "polygon"))
        polygons.append({"type": "Feature", "geometry": mapping(geometry), "properties": {"class": label}})
    if not observations:
        raise InputError(f"{path}: no polygons")
    out.write_text(json.dumps({"type": "FeatureCollection", "features": polygons}))
    return observations

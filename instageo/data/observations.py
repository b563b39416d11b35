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

from instageo.data.catalogue import point_inside, split_at_antimeridian
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
    time: str | None = None  # time of day, UTC, HH:MM:SS, when the observation says

    @property
    def extent(self) -> tuple[float, float, float, float]:
        return self.bbox or (self.lon, self.lat, self.lon, self.lat)


@dataclass(frozen=True)
class Labels:
    """How raw label values become the task's: a class name or index (after the optional
    ``remap``: source value -> class; values it does not list are ignored), or, for
    regression, a finite number. A value that fits neither is an error naming where it is."""

    classes: tuple[str, ...]
    regression: bool = False
    remap: dict[str, str | int] | None = None

    @classmethod
    def of(cls, recipe, remap=None) -> Labels:
        return cls(tuple(recipe.task.classes), recipe.task.kind == "regression",
                   None if remap is None else {_key(k): v for k, v in remap.items()})

    def __call__(self, raw, where: str) -> float | None:
        """The label, or None when the remap ignores this value."""
        if self.regression:
            try:
                value = float(raw)
            except (TypeError, ValueError):
                value = math.nan
            if not math.isfinite(value):
                raise InputError(f"{where}: label {raw!r} is not a finite number")
            return value
        if self.remap is not None:
            if _key(raw) not in self.remap:
                return None
            raw = self.remap[_key(raw)]
        if isinstance(raw, str) and raw.strip() in self.classes:
            return float(self.classes.index(raw.strip()))
        try:
            value = float(raw)
        except (TypeError, ValueError):
            value = math.nan
        if value.is_integer() and 0 <= value < len(self.classes):
            return value
        raise InputError(f"{where}: label {raw!r} is not one of task.classes {list(self.classes)} "
                         f"(a name, or an index 0-{len(self.classes) - 1})")


def raster_remap(recipe) -> tuple[tuple[float, float], ...]:
    """A label raster's remap as (pixel value, class index) pairs, each target checked."""
    spec = recipe.data.observations
    if spec is None or spec.kind != "raster" or spec.remap is None:
        return ()
    classes = Labels(tuple(recipe.task.classes))
    pairs = []
    for source, target in spec.remap.items():
        try:
            value = float(source)
        except ValueError:
            raise InputError(f"data.observations.remap: key {source!r} is not a pixel value") from None
        pairs.append((value, classes(target, f"data.observations.remap.{source}")))
    return tuple(pairs)


def _key(value) -> str:
    """A remap key: 1, 1.0 and "1" are the same source value."""
    try:
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    except (TypeError, ValueError):
        return str(value).strip()


@dataclass(frozen=True)
class _Columns:
    x: str
    y: str
    date: str | dt.date
    label: str
    crs: str
    time: str | None = None


def read_points(path: Path, x: str = "x", y: str = "y", date: str | dt.date = "date", label: str = "label",
                crs: str = "EPSG:4326", dates: DateRange | None = None,
                labels: Labels | None = None, time: str | None = None) -> list[Observation]:
    """Point observations from a CSV; ``dates`` keeps only those inside the window; ``date``
    a column, or the date of every row; ``labels`` checks and maps the label column (else
    labels are plain numbers)."""
    path = Path(path)
    spec = _Columns(x, y, date, label, crs, time)
    if path.suffix.lower() in PARQUET:
        columns, rows = _parquet_rows(path)
    else:
        try:
            handle = open(path, newline="", encoding="utf-8-sig")
        except OSError as exc:
            raise InputError(f"{path}: cannot read observations: {exc.strerror}") from None
        with handle:
            columns, rows = _csv_rows(handle, path)
    missing = [c for c in (spec.x, spec.y, spec.date, spec.time) if isinstance(c, str) and c not in columns]
    if missing:
        raise InputError(f"{path}:1: missing column(s) {missing}; the file has {columns}")
    to_lonlat = _to_lonlat(spec.crs, path)
    observations = []
    seen: dict[tuple, int] = {}
    ids: dict[str, int] = {}
    for line, row in rows:
        observation = _point(row, line, spec, path, to_lonlat, labels)
        if observation is None:  # the remap ignores its label
            continue
        if dates and not (dates.start <= observation.date <= dates.end):
            continue
        # a repeated row would weigh twice in training and could land in two splits
        signature = (observation.lon, observation.lat, observation.date, observation.time, observation.label)
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


PARQUET = (".parquet", ".geoparquet")


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The columns and (row number, row as text) pairs of a Parquet table, like a CSV's."""
    table = _parquet_table(path)
    rows = [(number, {k: "" if v is None else str(_plain(v)) for k, v in row.items()})
            for number, row in enumerate(table.to_pylist(), start=1)]
    return table.column_names, rows


def _parquet_table(path: Path):
    import pyarrow.parquet as parquet
    from pyarrow import ArrowException

    try:
        return parquet.read_table(path)
    except (ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def _in_world(lon: float, lat: float) -> bool:
    return -180 <= lon <= 180 and -90 <= lat <= 90


def _point(row: dict, line: int, spec: _Columns, path: Path, to_lonlat, labels: Labels | None) -> Observation | None:
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
    clock = None
    if isinstance(spec.date, dt.date):
        date = spec.date
    else:
        text = field(spec.date)
        try:
            date = dt.date.fromisoformat(text[:10])
            if len(text) > 10:  # a datetime: its time of day (UTC)
                clock = _time_of_day(text[11:], f"{path}:{line}", spec.date)
        except ValueError:
            raise InputError(f"{path}:{line}: date '{text}' is not YYYY-MM-DD") from None
    if spec.time is not None:
        clock = _time_of_day(field(spec.time), f"{path}:{line}", spec.time)
    if not 1900 <= date.year <= 2100:
        raise InputError(f"{path}:{line}: date {date} is not between 1900 and 2100")
    label = None
    if spec.label in row and (row[spec.label] or "").strip():
        if labels is not None:
            label = labels(row[spec.label].strip(), f"{path}:{line}")
            if label is None:
                return None
        else:
            try:
                label = float(row[spec.label])
            except ValueError:
                label = math.nan
            if not math.isfinite(label):
                raise InputError(f"{path}:{line}: label '{row[spec.label]}' is not a number") from None
    identifier = (row.get("id") or "").strip() or f"{path.stem}-{line}"
    return Observation(identifier, lon, lat, date, label, time=clock)


def _time_of_day(text: str, where: str, column: str) -> str:
    """HH:MM[:SS] (UTC; a trailing Z or +00:00 allowed) as HH:MM:SS."""
    clean = text.strip().removesuffix("Z").removesuffix("+00:00")
    try:
        return dt.time.fromisoformat(clean).replace(microsecond=0).isoformat()
    except ValueError:
        raise InputError(f"{where}: {column} '{text}' is not a UTC time of day HH:MM[:SS]") from None


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


def read_polygons(spec: PolygonObservations, labels: Labels, out: Path | None) -> list[Observation]:
    """One observation per polygon, at a point inside it, labelled through ``labels``. Any
    vector format GDAL/OGR reads (GeoPackage, Shapefile, GeoParquet, FlatGeobuf, GeoJSON),
    through pyogrio, in its own CRS (or ``spec.crs`` when it has none). The polygons are also
    written to ``out`` (GeoJSON, lon/lat, property ``class``) for rasterising."""
    import json

    import shapely
    from shapely.geometry import mapping

    path = Path(spec.path)
    layer = _read_vector(path)
    crs = spec.crs or _geojson_crs(path) or layer["crs"] or "EPSG:4326"
    to_lonlat = _to_lonlat(crs, path)
    fields = layer["fields"]
    if spec.label not in fields:
        raise InputError(f"{path}: no property '{spec.label}' (data.observations.label); it has {sorted(fields)}")
    if isinstance(spec.date, str) and spec.date not in fields:
        raise InputError(f"{path}: no property '{spec.date}' (data.observations.date: a property, or a "
                         f"YYYY-MM-DD date for every feature); it has {sorted(fields)}")
    observations, polygons = [], []
    seen: dict[tuple[bytes, dt.date], int] = {}
    for index, wkb in enumerate(layer["geometry"]):
        where = f"{path}: feature {index}"
        try:
            geometry = shapely.transform(shapely.from_wkb(wkb), to_lonlat, interleaved=False)
        except (TypeError, ValueError, shapely.errors.GEOSException):
            raise InputError(f"{where}: no valid geometry") from None
        if geometry is None or geometry.is_empty:
            raise InputError(f"{where}: empty geometry")
        if geometry.geom_type not in ("Polygon", "MultiPolygon"):
            raise InputError(f"{where}: a {geometry.geom_type}, not a polygon (data.observations.kind: polygons)")
        if not geometry.is_valid:  # a label's area is ambiguous: the user fixes it, knowing which
            raise InputError(f"{where}: invalid polygon ({shapely.is_valid_reason(geometry)}); fix it "
                             "(e.g. QGIS 'Fix geometries' or ST_MakeValid) and run again")
        geometry = split_at_antimeridian(geometry)
        if not (_in_world(*geometry.bounds[:2]) and _in_world(*geometry.bounds[2:])):
            raise InputError(f"{where}: coordinates outside the world in {crs}")
        label = labels(_plain(fields[spec.label][index]), f"{where} ({spec.label})")
        if label is None:  # the remap ignores this class
            continue
        if isinstance(spec.date, dt.date):
            date = spec.date
        else:
            text = str(_plain(fields[spec.date][index]) or "")
            try:
                date = dt.date.fromisoformat(text[:10])
            except ValueError:
                raise InputError(f"{where}: {spec.date} {text!r} is not YYYY-MM-DD") from None
            if not 1900 <= date.year <= 2100:
                raise InputError(f"{where}: {spec.date} {text!r} is not between 1900 and 2100")
        signature = (shapely.normalize(geometry).wkb, date)
        if signature in seen:
            raise InputError(f"{where}: duplicate of feature {seen[signature]} (the same polygon and date)")
        seen[signature] = index
        lon, lat = point_inside(geometry)
        identifier = f"{path.stem}-{index:05d}"
        source = out.name if out is not None else path.name
        observations.append(Observation(identifier, lon, lat, date, float(label), None, source, "polygon"))
        polygons.append({"type": "Feature", "geometry": mapping(geometry), "properties": {"class": label}})
    if not observations:
        raise InputError(f"{path}: no polygons" + (" with a class the remap keeps" if spec.remap else ""))
    if out is not None:
        out.write_text(json.dumps({"type": "FeatureCollection", "features": polygons}))
    return observations


def _read_vector(path: Path) -> dict:
    """geometry (WKB), fields (name -> values) and crs of a vector file's first layer
    (GeoParquet through pyarrow: GDAL in pyogrio's wheel has no Parquet driver)."""
    import pyogrio
    from pyogrio.errors import DataLayerError, DataSourceError

    if path.suffix.lower() in PARQUET:
        return _read_geoparquet(path)
    try:
        meta, _, geometry, values = pyogrio.raw.read(path)
    except (DataSourceError, DataLayerError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable vector file ({str(exc).splitlines()[0]})") from None
    if geometry is None:
        raise InputError(f"{path}: has no geometries")
    return {"geometry": geometry, "crs": meta.get("crs"), "fields": dict(zip(meta["fields"], values))}


def _read_geoparquet(path: Path) -> dict:
    """A GeoParquet file's primary geometry column (WKB) and CRS (from its 'geo' metadata;
    none given means OGC:CRS84, lon/lat), its other columns as fields."""
    import json

    table = _parquet_table(path)
    try:
        geo = json.loads((table.schema.metadata or {})[b"geo"])
        column = geo["primary_column"]
        crs = geo["columns"][column].get("crs")
    except (KeyError, ValueError, TypeError):
        raise InputError(f"{path}: not GeoParquet (no 'geo' metadata naming its geometry column)") from None
    if crs is not None:
        from pyproj import CRS

        crs = CRS.from_json_dict(crs).to_string()
    fields = {name: table.column(name).to_pylist() for name in table.column_names if name != column}
    return {"geometry": table.column(column).to_pylist(), "crs": crs or "EPSG:4326", "fields": fields}


def _geojson_crs(path: Path) -> str | None:
    """The old GeoJSON 'crs' member, which GDAL drops when it cannot use it: a file that
    names a CRS must name one we can use, rather than be read as lon/lat without a word."""
    import json

    if path.suffix.lower() not in (".geojson", ".json"):
        return None
    try:
        member = json.loads(path.read_text(encoding="utf-8")).get("crs")
    except (OSError, ValueError, AttributeError):
        return None
    if member is None:
        return None
    try:
        name = member["properties"]["name"].replace("urn:ogc:def:crs:", "").replace("::", ":")
    except (KeyError, TypeError, AttributeError):
        raise InputError(f"{path}: 'crs' is not a GeoJSON crs object with properties.name") from None
    _to_lonlat(name, path)  # an unknown CRS is an error naming the file
    return name


def _plain(value):
    """A numpy scalar or date from a vector file as a plain Python value."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value


def check_observations(recipe) -> list[Observation] | None:
    """Read the recipe's point or polygon observations and check every label against the
    task (cheap; before any search or chip): a bad one is an InputError naming file and line.
    Returns them (None for the demo's and for label rasters, which the search stage reads)."""
    spec = recipe.data.observations
    if spec is None or spec.kind == "raster":
        raster_remap(recipe)  # its targets must be classes
        return None
    labels = Labels.of(recipe, spec.remap)
    if spec.kind == "points":
        return read_points(spec.path, spec.x, spec.y, spec.date, spec.label, spec.crs, spec.dates, labels, spec.time)
    return read_polygons(spec, labels, None)

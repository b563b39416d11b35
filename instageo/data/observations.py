"""Observations: what the user labelled, where and when, read into one record type.

Points come from a CSV (one row per observation); label rasters each become one observation
covering the raster's footprint; polygons are data/polygons.py's, the record and the labels
observation_base.py's. Bad rows are errors naming the file and line: a dataset
built from silently dropped rows is a wrong dataset.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from instageo.data.observation_base import (  # noqa: F401 (Observation, Labels: their old import path)
    PARQUET, Labels, Observation, in_world, parquet_table, plain_value, lonlat_transform)
from instageo.data.polygons import read_polygons  # noqa: F401 (its old import path)
from instageo.errors import InputError
from instageo.recipe.models import DateRange, RasterObservations


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
    to_lonlat = lonlat_transform(spec.crs, path)
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


def _parquet_rows(path: Path) -> tuple[list[str], list[tuple[int, dict]]]:
    """The columns and (row number, row as text) pairs of a Parquet table, like a CSV's."""
    table = parquet_table(path)
    rows = [(number, {k: "" if v is None else str(plain_value(v)) for k, v in row.items()})
            for number, row in enumerate(table.to_pylist(), start=1)]
    return table.column_names, rows


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
    if not in_world(lon, lat):
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
        if not (in_world(*bounds[:2]) and in_world(*bounds[2:])):
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

"""What every reader of observations shares: the record (``Observation``), how raw label
values become the task's (``Labels``), and the checks and conversions of coordinates and
Parquet tables the point and polygon readers both use."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from instageo.errors import InputError


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
                   None if remap is None else {remap_key(k): v for k, v in remap.items()})

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
            if remap_key(raw) not in self.remap:
                return None
            raw = self.remap[remap_key(raw)]
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


def remap_key(value) -> str:
    """A remap key: 1, 1.0 and "1" are the same source value."""
    try:
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    except (TypeError, ValueError):
        return str(value).strip()


PARQUET = (".parquet", ".geoparquet")


def parquet_table(path: Path):
    import pyarrow.parquet as parquet
    from pyarrow import ArrowException

    try:
        return parquet.read_table(path)
    except (ArrowException, OSError) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def in_world(lon: float, lat: float) -> bool:
    return -180 <= lon <= 180 and -90 <= lat <= 90


def lonlat_transform(crs: str, path: Path):
    if crs.upper() in ("EPSG:4326", "WGS84", "OGC:CRS84"):
        return lambda x, y: (x, y)
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    try:
        transformer = Transformer.from_crs(CRS.from_user_input(crs), "EPSG:4326", always_xy=True)
    except CRSError:
        raise InputError(f"{path}: crs '{crs}' is not a known coordinate reference system") from None
    return transformer.transform


def plain_value(value):
    """A numpy scalar or date from a vector file as a plain Python value."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    return value

"""data.observations: the field observations chips are cut around (points, label rasters, polygons)."""

from __future__ import annotations

import datetime as dt
import glob
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.fields import Date, InputPath, Model


class DateRange(Model):
    """A window of dates, both ends included."""

    start: Date = Field(description="first day (YYYY-MM-DD), included")
    end: Date = Field(description="last day (YYYY-MM-DD), included")

    @field_validator("end")
    @classmethod
    def _after_start(cls, end: dt.date, info: ValidationInfo) -> dt.date:
        start = info.data.get("start")
        if start is not None and end < start:
            raise PydanticCustomError(
                "date_order", "end {end} is before start {start}", {"end": end, "start": start}
            )
        return end


def _date_or_name(value: object) -> object:
    """A YYYY-MM-DD text is a date (as YAML would have read it); any other text a column name."""
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value.strip())
        except ValueError:
            return value
    return value


DateOrColumn = Annotated[Union[Date, str], BeforeValidator(_date_or_name)]
Remap = dict[Union[str, int], Union[str, int]]


class PointObservations(Model):
    """Point observations from a CSV: one chip centred on each point."""

    kind: Literal["points"]
    path: InputPath = Field(description="CSV with one observation per row")
    x: str = Field("x", description="column of the x coordinate (longitude, in crs)")
    y: str = Field("y", description="column of the y coordinate (latitude, in crs)")
    date: DateOrColumn = Field("date", description="column of the observation date (YYYY-MM-DD, or a UTC "
                               "datetime YYYY-MM-DDTHH:MM[:SS]), or one YYYY-MM-DD date for every row")
    time: str | None = Field(None, description="column of the observation's time of day (UTC, HH:MM[:SS]), "
                             "for data.chips.time.tolerance_minutes")
    label: str = Field("label", description="column of the class (a name in task.classes, or its index; a "
                       "value, for regression)")
    remap: Remap | None = Field(None, description="source label -> task class (name or index); labels not "
                                "listed are ignored")
    crs: str = Field("EPSG:4326", description="CRS of the x and y columns")
    dates: DateRange | None = Field(None, description="keep only observations in this window")


def _expand_globs(paths: object, info: ValidationInfo) -> object:
    """Entries with * ? or [ are glob patterns (relative to the recipe), one file per match."""
    if isinstance(paths, str):  # one path or pattern, as --set gives it
        paths = [paths]
    if not isinstance(paths, list):
        return paths
    base = Path((info.context or {}).get("base_dir", "."))
    expanded: list = []
    for entry in paths:
        if not (isinstance(entry, str) and any(c in entry for c in "*?[")):
            expanded.append(entry)
            continue
        pattern = str((base / Path(entry).expanduser()).resolve())
        matches = sorted(p for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        if not matches:
            raise PydanticCustomError("file_missing", "no file matches {pattern}", {"pattern": pattern})
        expanded.extend(matches)
    return expanded


class RasterObservations(Model):
    """Label rasters (GeoTIFF, any CRS), tiled into chips; their pixels are the labels."""

    kind: Literal["raster"]
    paths: Annotated[list[InputPath], BeforeValidator(_expand_globs)] = Field(
        min_length=1, description="label rasters; an entry with * ? or [ is a glob pattern"
    )
    date: Date | None = Field(None, description="date of every raster, unless dates is given")
    dates: InputPath | None = Field(None, description="CSV with columns file,date (file name or stem)")
    remap: Remap | None = Field(None, description="pixel value -> task class (name or index); pixels of values "
                                "not listed are not labelled")


class PolygonObservations(Model):
    """Labelled polygons in any vector format GDAL reads (GeoPackage, Shapefile, GeoParquet,
    FlatGeobuf, GeoJSON): one chip centred on each, every polygon in it rasterised."""

    kind: Literal["polygons"]
    path: InputPath = Field(description="vector file of labelled polygons (its first layer)")
    label: str = Field("label", description="property holding the class (a name in task.classes, or its index)")
    remap: Remap | None = Field(None, description="source class -> task class (name or index); polygons of "
                                "classes not listed are ignored")
    date: DateOrColumn = Field("date", description="property holding the survey date (YYYY-MM-DD), or one "
                               "YYYY-MM-DD date for every polygon")
    crs: str | None = Field(None, description="CRS of the coordinates if the file does not say (default EPSG:4326)")


Observations = Annotated[
    Union[PointObservations, RasterObservations, PolygonObservations], Field(discriminator="kind")
]

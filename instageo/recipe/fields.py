"""Field types every recipe section shares: the strict base model, sweeps, input files,
bounded numbers, dates, CRSs and lon/lat boxes.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting.
Fields typed ``Sweep[...]`` accept a list of values, which declares a sweep (see sweep.py).
Paths to input files are resolved against the recipe's folder and must exist.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, TypeVar, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, model_validator
from pydantic_core import PydanticCustomError


T = TypeVar("T")


class SweepMarker:
    """Annotation metadata marking a field whose list value declares a sweep."""

    def __repr__(self) -> str:
        return "SweepMarker()"


SWEEP = SweepMarker()
# A scalar, or a non-empty list of scalars (one recipe variant per value).
Sweep = Annotated[Union[T, Annotated[list[T], Field(min_length=1)]], SWEEP]


class InputFile(type(Path())):  # type: ignore[misc]
    """An existing file the recipe reads. Cache keys hash its content, not its path."""


def _resolve_existing(path: Path, info: ValidationInfo) -> InputFile:
    base = Path((info.context or {}).get("base_dir", "."))
    resolved = (base / path.expanduser()).resolve()
    if not resolved.is_file():
        raise PydanticCustomError(
            "file_missing", "file not found: {path}", {"path": str(resolved)}
        )
    return InputFile(resolved)


# A file the recipe reads; relative paths are relative to the recipe file.
InputPath = Annotated[Path, AfterValidator(_resolve_existing)]


class CatalogueFile(InputFile):
    """A local catalogue's catalog.json: what a stage reads through it is the whole catalogue
    (its items and the asset files they point at), so that is what its cache key hashes; the
    search stage hands the runner that digest (pipeline.py, ``Stage.input_digests``)."""


def _resolve_catalogue(path: Path, info: ValidationInfo) -> CatalogueFile:
    return CatalogueFile(_resolve_existing(path, info))


InputCatalogue = Annotated[Path, AfterValidator(_resolve_catalogue)]

# Upper bounds catch typos (an extra zero, a date typed as a number) at load instead of
# as an overflow deep in a stage; infinities and NaN are never a valid setting.
PositiveInt = Annotated[int, Field(ge=1, le=100_000)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0)]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: object) -> object:
        """YAML's true/false would pass as 1/0 for a number field: refuse them, naming it."""
        if isinstance(data, dict):
            for name, info in cls.model_fields.items():
                if isinstance(data.get(name), bool) and info.annotation is not bool and _takes_number(info.annotation):
                    raise PydanticCustomError("bool_number", "true/false is not a number", {"field": name})
        return data


def _takes_number(annotation) -> bool:
    """A number field (or a sweep of numbers) that takes no boolean."""
    import typing

    if annotation in (int, float):
        return True
    args = typing.get_args(annotation)
    return bool(args) and bool not in args and any(_takes_number(a) for a in args)


def _plausible_date(value: dt.date) -> dt.date:
    if not 1900 <= value.year <= 2100:
        raise PydanticCustomError("date_range", "date {d} is not between 1900 and 2100", {"d": value.isoformat()})
    return value


Date = Annotated[dt.date, AfterValidator(_plausible_date)]


def resolvable_crs(value: str) -> str:
    """'utm', or a projected CRS pyproj knows (chips are measured in metres)."""
    if value.lower() == "utm":
        return value
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        crs = CRS.from_user_input(value)
    except CRSError:
        raise PydanticCustomError("crs", "crs '{c}' is not a known CRS; use 'utm' or an EPSG code such as "
                                  "EPSG:32637", {"c": value}) from None
    if not crs.is_projected:
        raise PydanticCustomError("crs", "crs '{c}' is not projected: chips are measured in metres", {"c": value})
    return value


def _on_earth(box: tuple[float, float, float, float] | None):
    """A lon/lat box: west < east within -180..180, south < north within -90..90."""
    if box is None:
        return box
    west, south, east, north = box
    if not (-180 <= west <= 180 and -180 <= east <= 180 and -90 <= south <= 90 and -90 <= north <= 90):
        raise PydanticCustomError("bbox_range", "{b} is outside -180..180 / -90..90 degrees", {"b": list(box)})
    if not (west < east and south < north):
        raise PydanticCustomError("bbox_order", "must be west < east and south < north, got {b}", {"b": list(box)})
    return box


def once_each(values: list[str], code: str, message: str) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise PydanticCustomError(code, message, {"d": repeated})
    return values


LonLatBox = Annotated[tuple[float, float, float, float], AfterValidator(_on_earth)]


# a field that says where work runs, not what it makes: left out of its stage's cache key
NOT_IN_KEY = {"cache_key": False}

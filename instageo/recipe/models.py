"""The recipe: one typed model for a whole experiment.

Every model forbids unknown keys so a typo is an error, not a silently ignored setting.
Fields typed ``Sweep[...]`` accept a list of values, which declares a sweep (see sweep.py).
Paths to input files are resolved against the recipe's folder and must exist.
"""

from __future__ import annotations

import datetime as dt
import glob
from pathlib import Path
from typing import Annotated, Literal, TypeVar, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)
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


def _resolvable_crs(value: str) -> str:
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


def _once_each(values: list[str], code: str, message: str) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise PydanticCustomError(code, message, {"d": repeated})
    return values


LonLatBox = Annotated[tuple[float, float, float, float], AfterValidator(_on_earth)]


# --- data sources -------------------------------------------------------------------------


class DemoSource(Model):
    """A synthetic HLS-like scene generated offline (the embedded default)."""

    kind: Literal["demo"]
    seed: Seed = Field(0, description="random seed of the scene (same seed, same scene)")
    size: int = Field(384, ge=64, le=8192, description="scene width and height in pixels")
    acquisitions: int = Field(12, ge=1, le=365, description="acquisition dates, 16 days apart")
    points: int = Field(200, ge=1, le=1_000_000, description="number of point observations generated")


def _known_preset(name: str | None) -> str | None:
    from instageo.recipe.presets import PRESETS

    if name is not None and name not in PRESETS:
        raise PydanticCustomError(
            "preset", "preset '{name}' is not valid, should be one of {valid}",
            {"name": name, "valid": sorted(PRESETS)},
        )
    return name


PresetName = Annotated[str, AfterValidator(_known_preset)]


PerBand = Union[float, dict[str, float], None]


class AssetsSpec(Model):
    """How a catalogue's assets become bands: shared by local catalogues and STAC APIs."""

    bands: dict[str, str] | None = Field(None, description="common band name -> asset key")
    mask: str | None = Field(None, description="asset key of the cloud mask, with bands")
    mask_kind: Literal["fmask", "cfmask", "scl", "qa_pixel"] = Field(
        "fmask", description="fmask: HLS bits; cfmask: classic Fmask values; scl: Sentinel-2 SCL; "
        "qa_pixel: Landsat Collection 2 QA_PIXEL bits"
    )
    scale: PerBand = Field(
        None, description="multiply raw values by this to get reflectance (or the band's unit): one value, or "
        "{band: value}; wins over the catalogue's raster:bands and the preset"
    )
    offset: PerBand = Field(None, description="add this after scaling: one value, or {band: value}")
    nodata: PerBand = Field(None, description="raw value meaning no data: one value, or {band: value}")
    max_cloud_cover: float = Field(100.0, ge=0.0, le=100.0, description="largest eo:cloud_cover (%) of an item kept")


class CatalogSource(AssetsSpec):
    """A local static STAC catalogue (for example made by `instarun catalog build`)."""

    kind: Literal["catalog"]
    path: InputCatalogue = Field(description="catalog.json of the static catalogue")
    collections: list[str] | None = Field(None, description="collections to use (default: all)")
    preset: PresetName | None = Field(
        None, description="sensor preset (asset keys, scaling, mask); default: the one `instarun catalog build` "
        "wrote into the catalogue, unless bands are given"
    )


class StacSource(AssetsSpec):
    """A STAC API searched with pystac-client."""

    kind: Literal["stac"]
    url: str = Field(pattern=r"^https?://", description="root of the STAC API")
    collections: list[str] = Field(min_length=1, description="collection ids to search")
    preset: PresetName | None = Field(
        None, description="catalogue preset (asset keys, scales, masks); guessed for known URLs"
    )
    timeout: float = Field(30.0, gt=0, le=600, description="seconds to wait for one answer")
    retries: int = Field(4, ge=0, le=20, description="retries on 429/5xx, timeouts, drops")


Source = Annotated[Union[DemoSource, CatalogSource, StacSource], Field(discriminator="kind")]


# --- observations -------------------------------------------------------------------------


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


# --- chips ----------------------------------------------------------------------------------


class TimeSpec(Model):
    """Which acquisitions make a chip's time series."""

    steps: int = Field(1, ge=1, le=64, description="acquisitions per chip")
    step_days: int = Field(30, ge=1, le=3660, description="days between steps, counted back from the observation date")
    tolerance_days: int = Field(5, ge=0, le=3660, description="days an acquisition may lie from its step's date")
    tolerance_minutes: int | None = Field(
        None, ge=0, le=1440 * 3660, description="for observations with a time of day (data.observations.time, "
        "or a datetime in the date column): minutes an acquisition may lie from its step's date and time, "
        "instead of tolerance_days"
    )
    daytime_only: bool = Field(
        False, description="keep only acquisitions taken with the sun above the horizon at the scene's centre "
        "(optical sources; the sun's elevation from the item's datetime and footprint)"
    )
    prefer: Literal["nearest", "earlier", "later"] = Field(
        "nearest", description="order in which acquisitions within tolerance of a step are tried: "
        "nearest first, or those on/before (earlier) or on/after (later) the target first"
    )


MaskClass = Literal[
    "cirrus", "cloud", "adjacent", "cloud_shadow", "snow", "water", "saturated", "dark",
    "unclassified", "nodata",
]


class MaskSpec(Model):
    """Which pixels the quality mask throws away, and how many a chip may lose."""

    classes: list[MaskClass] = Field(
        ["cirrus", "cloud", "adjacent", "cloud_shadow"],
        description="mask classes whose pixels are thrown away (those an encoding lacks select nothing)",
    )
    strategy: Literal["each", "any"] = Field(
        "each", description="each: mask every time step by its own mask; any: a pixel masked in "
        "one step is masked in all"
    )
    max_fraction: Fraction = Field(0.2, description="largest masked fraction of a usable chip")
    require: bool = Field(
        False, description="skip acquisitions that have no cloud mask asset (by default they are used "
        "unmasked, with a warning naming them)"
    )


class LabelSpec(Model):
    """How observations become label pixels."""

    buffer: int = Field(1, ge=0, le=4096, description="pixels around a point that take its label")
    ignore_index: int = Field(-1, ge=-32768, le=32767, description="label value of unlabelled pixels, left out of losses and metrics")


class ChipSpec(Model):
    """The chips: the model inputs cut from the imagery around each observation."""

    size: int = Field(224, ge=8, le=4096, description="chip width and height in pixels")
    stride: int | None = Field(None, ge=1, le=4096, description="pixels between chips tiling a label raster (default: size, so chips never share pixels; the last ones reach past the raster's edge, padded with nodata)")
    resolution: float = Field(30.0, ge=0.01, le=100_000, description="metres per pixel")
    crs: Annotated[str, AfterValidator(_resolvable_crs)] = Field(
        "utm", description="'utm' (zone of each chip) or a projected CRS such as EPSG:32637")
    bands: list[str] = Field(
        ["blue", "green", "red", "nir", "swir16", "swir22"], min_length=1,
        description="common band names, in model input order; the source's preset must have them",
    )
    shift: int | None = Field(
        None, ge=0, le=2048, description="largest random move (pixels, seeded by data.split.seed) of a point's "
        "chip off its point, so labels do not always sit in the centre; default a quarter of size; 0 centres"
    )
    placement: Literal["point", "grid"] = Field(
        "point", description="point: a chip around each point observation; grid: chips side by side over the "
        "extent of each date's points, each chip holding at least one"
    )
    min_observations: int = Field(
        1, ge=1, le=100_000, description="point chips holding fewer point observations (their own and the "
        "others inside them) are skipped as few_observations"
    )
    time: TimeSpec = TimeSpec()
    mask: MaskSpec = MaskSpec()
    label: LabelSpec = LabelSpec()

    @property
    def max_shift(self) -> int:
        """The shift that keeps a point and its label buffer inside its chip."""
        wanted = self.size // 4 if self.shift is None else self.shift
        return max(0, min(wanted, self.size // 2 - self.label.buffer - 1))

    @field_validator("bands")
    @classmethod
    def _unique(cls, bands: list[str]) -> list[str]:
        return _once_each(bands, "duplicate", "bands repeated: {d}")




class HeldOut(Model):
    """Chips named for a split, by observation file, by region or by id (any mix). A chip is
    taken by its own footprint, never by its source raster's centre."""

    files: list[str] = Field(
        [], description="globs matched against each observation's file name and id "
        "(e.g. 'Spain_*', '*_LabelHand.tif'): all chips of the matching label rasters or polygon files"
    )
    regions: list[LonLatBox] = Field(
        [], description="lon/lat boxes [west, south, east, north]: the chips whose footprint touches one"
    )
    ids: list[str] = Field([], description="chip ids or observation ids")

    @model_validator(mode="after")
    def _names_something(self) -> HeldOut:
        if not (self.files or self.regions or self.ids):
            raise PydanticCustomError("held_out_empty", "name chips by files, regions or ids", {})
        return self


class SplitSpec(Model):
    """How chips are split into train, val and test: named sets (files, regions, ids) and/or
    fractions of the rest dealt by ``method``."""

    method: Literal["spatial", "clusters", "tile", "year", "random", "date"] = Field(
        "spatial", description="how fractions are dealt from the chips no named set takes, in whole groups: "
        "spatial: square blocks of block_km; clusters: chips linked by chains closer than block_km; tile: the "
        "satellite tile (MGRS, Landsat path/row) of their imagery; year: their observation year; random: chip "
        "by chip; date: the latest chips to test and val"
    )
    val: Annotated[float, Field(ge=0.0, lt=1.0)] | HeldOut = Field(
        0.2, description="validation chips (early stopping, the best epoch and the recommended student "
        "are chosen on them): a fraction of all chips, or a named set"
    )
    test: Annotated[float, Field(ge=0.0, lt=1.0)] | HeldOut = Field(
        0.2, description="test chips (reported, never used to choose): a fraction of all chips, or a named set"
    )
    block_km: float = Field(10.0, gt=0, description="block size of the spatial split; link distance of clusters")
    gap_km: float = Field(
        0.0, ge=0, le=20_000, description="chips closer than this (edge to edge) to a chip of a later split leave theirs "
        "('excluded'): train near val or test, val near test"
    )
    seed: Seed = Field(0, description="seed of the split (kept apart from the training seed, so a seed "
                       "sweep trains on the same split)")

    @model_validator(mode="after")
    def _leaves_train(self) -> SplitSpec:
        fractions = sum(v for v in (self.val, self.test) if isinstance(v, float))
        if fractions >= 1.0:
            raise PydanticCustomError(
                "split_sum", "val + test must leave chips for training (got {s})", {"s": fractions},
            )
        return self


# a field that says where work runs, not what it makes: left out of its stage's cache key
NOT_IN_KEY = {"cache_key": False}


class LocalExecutor(Model):
    """Work on this machine: chips read with threads; prediction in this process."""

    kind: Literal["local"] = "local"
    workers: int = Field(8, ge=1, le=256, description="chip reads in flight at once")


class DaskExecutor(Model):
    """Work on a dask.distributed cluster: a task per chip, or per block of prediction tiles."""

    kind: Literal["dask"]
    address: str | None = Field(None, description="scheduler address; none starts a LocalCluster")
    workers: int = Field(2, ge=1, le=256, description="workers of the LocalCluster")


Executor = Annotated[Union[LocalExecutor, DaskExecutor], Field(discriminator="kind")]


class Data(Model):
    """Where the imagery and the observations come from, and how chips are made."""

    source: Source
    observations: Observations | None = Field(
        None, description="required unless the source is 'demo', which makes its own"
    )
    chips: ChipSpec = ChipSpec()
    split: SplitSpec = SplitSpec()
    executor: Executor = LocalExecutor()

    @model_validator(mode="after")
    def _observations_given(self) -> Data:
        if self.observations is None and self.source.kind != "demo":
            raise PydanticCustomError(
                "observations_missing",
                "observations are required for a '{kind}' source",
                {"kind": self.source.kind, "field": "observations"},
            )
        return self

    @model_validator(mode="after")
    def _bands_in_preset(self) -> Data:
        from instageo.recipe.presets import preset_for

        preset = preset_for(self.source)
        if preset is None:
            return self
        known = {band for keys in [preset.bands, *preset.collection_bands.values()] for band in keys}
        unknown = [band for band in self.chips.bands if band not in known]
        if unknown:
            raise PydanticCustomError(
                "band", "{unknown} not in preset '{preset}', which has {known}",
                {"unknown": unknown, "preset": preset.name, "known": sorted(known),
                 "field": "chips.bands"},
            )
        return self


# --- task and models -----------------------------------------------------------------------


class Task(Model):
    """What the model predicts."""

    kind: Literal["segmentation", "regression"] = Field(
        "segmentation", description="segmentation: a class per pixel; regression: a value per pixel"
    )
    classes: list[str] = Field(
        ["absent", "present"], min_length=2, description="class names, each once; a label is an index into this list"
    )
    colors: list[str] | None = Field(None, description="'#rrggbb' per class")

    @field_validator("colors")
    @classmethod
    def _hex(cls, colors: list[str] | None) -> list[str] | None:
        import re

        for color in colors or []:
            if not re.fullmatch(r"#[0-9a-fA-F]{6}", color):
                raise PydanticCustomError("color", "'{c}' is not a '#rrggbb' colour", {"c": color})
        return colors

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, classes: list[str]) -> list[str]:
        return _once_each(classes, "classes", "class names repeated: {d}")

    @model_validator(mode="after")
    def _a_colour_per_class(self) -> Task:
        if self.colors is not None and len(self.colors) != len(self.classes):
            raise PydanticCustomError(
                "colors", "{n} colour(s) for {m} classes: give one per class, or none",
                {"n": len(self.colors), "m": len(self.classes), "field": "colors"},
            )
        return self


class TrainSpec(Model):
    """Training settings (AdamW; early stopping on the val split)."""

    epochs: Sweep[PositiveInt] = Field(10, description="most passes over the training chips")
    batch_size: Sweep[PositiveInt] = Field(8, description="chips per training step")
    lr: Sweep[Annotated[float, Field(gt=0, lt=1)]] = Field(
        1.0e-4, description="peak learning rate (AdamW, linear warm-up then cosine decay)"
    )
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay")
    warmup_epochs: int = Field(1, ge=0, le=100_000, description="epochs of linear learning-rate warm-up")
    patience: int = Field(5, ge=1, le=100_000, description="epochs without val mIoU gain before stopping")
    smooth: int = Field(
        3, ge=1, le=100, description="epochs the val score is averaged over for early stopping and the best "
        "epoch (no epoch is chosen before this many have run), so one noisy epoch does not decide"
    )
    ema: float = Field(0.0, ge=0, lt=1, description="decay per step of an exponential moving average of the "
                       "weights (e.g. 0.9); the average is what val scores and what is kept; 0: off")
    augment: bool = Field(True, description="each training batch seen in a random one of the square's 8 "
                          "symmetries (flips and 90-degree rotations), its labels alike")
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto", description="bf16: mixed precision (bf16 autocast, fp32 weights); auto: bf16 where it pays (a GPU "
        "that supports bf16, or a CPU with AVX512-BF16 or AMX and an encoder at least 256 wide), else fp32"
    )


def _known_backbone(name: str) -> str:
    from instageo.recipe.backbones import BACKBONES

    if name not in BACKBONES:
        raise PydanticCustomError(
            "backbone", "backbone '{name}' is not valid, should be one of {valid}",
            {"name": name, "valid": sorted(BACKBONES)},
        )
    return name


class Teacher(Model):
    """The foundation model fine-tuned on the chips."""

    backbone: Annotated[str, AfterValidator(_known_backbone)] = Field(
        "prithvi_eo_v1_100", description="architecture, a name from the backbones table at the end of "
        "this page (each with the published Prithvi-EO checkpoint it loads)"
    )
    weights: InputPath | None = Field(
        None, description="local pretrained checkpoint (e.g. Prithvi_EO_V1_100M.pt); none: random init"
    )
    normalize: Literal["pretrained", "chips"] = Field(
        "pretrained", description="band statistics the models see: pretrained (with weights, the "
        "backbone's pretraining mean/std for the bands it was pretrained on, the chips' for any other) "
        "or chips (the train split's own)"
    )
    head: Literal["upsample", "light"] = Field(
        "upsample", description="segmentation head: upsample (learned upsampling) or light (1x1 convolution, bilinear)"
    )
    train: TrainSpec = TrainSpec()


class Distill(Model):
    """How the students learn from the teacher."""

    temperature: Sweep[Annotated[float, Field(gt=0, le=100)]] = Field(2.0, description="softmax temperature of the KL term")
    alpha: Sweep[Fraction] = Field(0.5, description="weight of the labels' cross-entropy; 1 - alpha: of the KL to the teacher")
    feature_weight: float = Field(
        0.0, ge=0, description="weight of an MSE between the student's tokens and the teacher's "
        "after the same number of blocks (0: off)"
    )


class Student(Model):
    """The small models distilled from the teacher."""

    depth: Sweep[Annotated[int, Field(ge=1, le=64)]] = Field(
        4, description="encoder blocks the student keeps (the teacher's first N); a list: one student each"
    )
    head: Literal["copy", "reinit"] = Field(
        "copy", description="copy: start from the teacher's head; reinit: a fresh head"
    )
    distill: Distill = Distill()
    train: TrainSpec = TrainSpec()


# --- export ----------------------------------------------------------------------------------


class OnnxSpec(Model):
    """ONNX export of each student, with a parity check against PyTorch."""

    opset: int = Field(17, ge=13, le=23, description="ONNX opset version")
    tolerance: float = Field(1.0e-3, gt=0, description="largest |logit difference| allowed")
    quantize: bool = Field(False, description="also write an int8 model (dynamic quantisation) and its metrics")
    float16: bool = Field(
        False, description="also write a float16 model for GPUs (float32 inputs and outputs), checked against "
        "PyTorch; predict runs it where a CUDA GPU is present (int8 is for CPUs)"
    )
    teacher: bool = Field(
        False, description="also export the teacher (once: the teacher_export stage), predict with it over the same "
        "areas (teacher_predict) and time each student's ONNX model beside it"
    )


class PredictSpec(Model):
    """Sliding-window prediction of each exported student over an area."""

    bbox: LonLatBox | None = Field(
        None, description="west, south, east, north in degrees"
    )
    geojson: InputPath | None = Field(
        None, description="GeoJSON polygon(s) to predict over, lon/lat (outside them: nodata); area when no bbox"
    )
    areas: list[LonLatBox] | InputPath | None = Field(
        None, description="several areas, each predicted into its own COGs (areas/<name>/) with an index "
        "areas.geojson: a list of [west, south, east, north] boxes (area1, area2, ...), or a GeoJSON file whose "
        "features are the areas (named by their 'name' property); instead of bbox / geojson"
    )
    date: Date | None = Field(None, description="date to predict for (default: the latest observation's)")
    overlap: float = Field(
        0.25, ge=0.0, lt=1.0, description="fraction of a chip that neighbouring tiles share, blended (0.5: the model "
        "sees 2x more pixels for a map about 1 pp mIoU better; bench/RESULTS.md)"
    )
    batch_size: PositiveInt = Field(
        2, description="tiles per ONNX call (on 2 CPU cores 2, 4 and 8 ran at the same speed and 8 took 575 MiB more); "
        "unset on a GPU: the fastest batch its memory holds, doubling from 2"
    )
    int8_tolerance_pp: float | None = Field(
        0.5, ge=0.0, le=100.0, description="predict with the int8 model (export.onnx.quantize) when quantisation "
        "lost at most this much val mIoU, in percentage points (regression: this % of val RMSE); null: always float32"
    )
    executor: Executor = Field(
        LocalExecutor(), description="where tiles are predicted: 'local', in this process; 'dask', in blocks of tile "
        "rows on a dask.distributed cluster, the same bytes (not part of the cache key)", json_schema_extra=NOT_IN_KEY
    )
    block_tiles: PositiveInt = Field(
        64, description="with the dask executor, about this many tiles per task, in whole tile rows (not part of "
        "the cache key)", json_schema_extra=NOT_IN_KEY
    )

    @field_validator("areas")
    @classmethod
    def _some_areas(cls, areas):
        if isinstance(areas, list) and not areas:
            raise PydanticCustomError("areas_empty", "areas: give at least one box", {})
        return areas

    @model_validator(mode="after")
    def _one_way_to_say_where(self) -> PredictSpec:
        if self.areas is not None and (self.bbox is not None or self.geojson is not None):
            raise PydanticCustomError(
                "areas_and_bbox", "give areas, or bbox / geojson, not both", {"field": "export.predict.areas"},
            )
        return self


class ViewerSpec(Model):
    """The offline map viewer of the predictions."""

    zoom: tuple[Annotated[int, Field(ge=0, le=22)], Annotated[int, Field(ge=0, le=22)]] = Field(
        (8, 13), description="min and max zoom of the tile pyramid"
    )

    @field_validator("zoom")
    @classmethod
    def _ordered(cls, zoom: tuple[int, int]) -> tuple[int, int]:
        if zoom[0] > zoom[1]:
            raise PydanticCustomError("zoom_order", "min zoom {z} above max", {"z": zoom[0]})
        return zoom


class EmbeddingsSpec(Model):
    """An encoder over the prediction area as a map of features: PCA (fitted on the train
    chips), unit length, quantised, one vector per patch or pixel, as a COG."""

    model: Literal["student", "teacher"] = Field(
        "student", description="whose encoder: each student's (the embeddings stage), or the teacher's, once "
        "(teacher_embeddings; needs export.onnx.teacher)"
    )
    dims: int = Field(64, ge=1, le=1024, description="PCA components kept (at most the encoder's features)")
    quantize: Literal["int8", "binary", "none"] = Field(
        "int8", description="int8: round(127 x value), -128 nodata (AlphaEarth's layout); binary: the sign bits, "
        "packed 8 per byte, with a mask; none: float32, NaN nodata"
    )
    level: Literal["patch", "pixel"] = Field(
        "patch", description="one vector per encoder patch (the chips' resolution x the patch size), or per pixel"
    )


class Export(Model):
    """What is made from each student: ONNX model, prediction, viewer, embeddings."""

    onnx: OnnxSpec = OnnxSpec()
    predict: PredictSpec = PredictSpec()
    viewer: ViewerSpec = ViewerSpec()
    embeddings: EmbeddingsSpec | None = Field(
        None, description="also map an encoder's features over the prediction area ({} for the defaults)"
    )

    @model_validator(mode="after")
    def _teacher_embeddings_need_its_export(self) -> Export:
        if self.embeddings is not None and self.embeddings.model == "teacher" and not self.onnx.teacher:
            raise PydanticCustomError(
                "teacher_not_exported", "export.embeddings.model 'teacher' needs export.onnx.teacher: true",
                {"field": "export.embeddings.model"},
            )
        return self


class Recipe(Model):
    """A whole experiment: data, task, teacher, student(s) and what to export."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=64, description="names the run folder runs/<name>/"
    )
    seed: Sweep[Seed] = Field(
        0, description="seed of training (initialisation, batch order, augmentation); a list: one teacher and "
        "its students per seed, and the report gives mean and spread (the split has its own data.split.seed)"
    )
    data: Data
    task: Task = Task()
    teacher: Teacher = Teacher()
    student: Student = Student()
    export: Export = Export()

    _path: Path | None = PrivateAttr(None)  # the recipe file, set by the loader
    _overrides: tuple[str, ...] = PrivateAttr(())  # fields given with --set, set by the loader

    @model_validator(mode="after")
    def _student_fits_teacher(self) -> Recipe:
        from instageo.recipe.backbones import BACKBONES

        spec = BACKBONES.get(self.teacher.backbone)
        depths = self.student.depth if isinstance(self.student.depth, list) else [self.student.depth]
        too_deep = [d for d in depths if spec is not None and d > spec.depth]
        if too_deep:
            raise PydanticCustomError(
                "depth", "{depths} deeper than the teacher's {teacher} blocks ({backbone})",
                {"depths": too_deep, "teacher": spec.depth, "backbone": self.teacher.backbone,
                 "field": "student.depth"},
            )
        return self

    @property
    def path(self) -> Path | None:
        return self._path

"""data.chips and data.split: the chips cut from the imagery, and how they are split."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from instageo.recipe.fields import Fraction, LonLatBox, Model, Seed, once_each, resolvable_crs


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
    crs: Annotated[str, AfterValidator(resolvable_crs)] = Field(
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
        return once_each(bands, "duplicate", "bands repeated: {d}")



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

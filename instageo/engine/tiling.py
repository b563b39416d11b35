"""What to predict: a ``TileSpec`` (the part of a recipe, or of a bundle's record of it, that
prediction reads: the chip spec with its bands, size, resolution, CRS, acquisition choice and
masks; the data source, whose preset scales and signs the reads; the overlap and the batch),
the one tile count (``check_area_size``) and tiling of an area (``area_grids``,
``tile_area``), and the output raster the tiles make (``Layout``).

Each tile is read by the chips stage's own code (same masks, same temporal selection), so the
inputs at prediction are the inputs of training.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

from instageo.data.chip_build import ChipJob, read_stack, reader_for
from instageo.data.chips import candidates_for, masked_items
from instageo.data.grid import ChipGrid, centres_lonlat, tiled_grids
from instageo.errors import InputError
from instageo.recipe.chips import ChipSpec
from instageo.recipe.presets import preset_for
from instageo.recipe.sources import Source

MAX_AREA_PIXELS = 2**33  # ~8.6 G pixels (e.g. 2,700 km x 2,700 km at 30 m): hours of reading
MAX_TILES = 1_000_000
MAX_STRIP_BYTES = 2 * 2**30  # one tile row across the area: probabilities, weights, colour


@dataclass(frozen=True)
class TileSpec:
    """How to tile and predict: a recipe's data.chips, data.source and export.predict, or a
    bundle's record of them. ``batch_fixed``: the batch was chosen by the user (else, on a
    GPU, the fastest its memory holds)."""

    chips: ChipSpec
    source: Source
    overlap: float
    batch_size: int
    batch_fixed: bool = True

    @classmethod
    def of_recipe(cls, recipe) -> TileSpec:
        spec = recipe.export.predict
        return cls(recipe.data.chips, recipe.data.source, spec.overlap, spec.batch_size,
                   "batch_size" in spec.model_fields_set)

    @classmethod
    def of_bundle(cls, bundle: dict, source: dict, overlap: float, batch_size: int) -> TileSpec:
        """The spec the bundle's predict stage ran with, reading ``source`` (source_for)."""
        from pydantic import TypeAdapter, ValidationError

        chip = bundle["chip"]
        try:
            chips = ChipSpec.model_validate({
                "size": chip["size"], "resolution": chip["resolution"], "crs": chip["crs"], "bands": bundle["bands"],
                "time": {k: chip[k] for k in ("steps", "step_days", "tolerance_days", "prefer")},
                "mask": chip["mask"], "label": {"ignore_index": bundle["ignore_index"]}})
            return cls(chips, TypeAdapter(Source).validate_python(source), overlap, batch_size)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise InputError(f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}") from None

    @property
    def overlap_pixels(self) -> int:
        """Pixels that neighbouring tiles share."""
        return int(round(self.chips.size * self.overlap))

    @property
    def stride(self) -> int:
        return max(self.chips.size - self.overlap_pixels, 1)


@dataclass(frozen=True)
class Area:
    """One area to predict over: its name (the folder of its COGs), lon/lat box, optional
    outline (outside it: nodata) and where it was declared (for messages)."""

    name: str
    bbox: tuple[float, float, float, float]
    outline: object = None
    declared: str = "the observations' extent"


@dataclass(frozen=True)
class Layout:
    """The output raster: the union of the tiles, on their shared grid."""

    crs: str
    left: float
    top: float
    resolution: float
    width: int
    height: int

    @classmethod
    def of(cls, grids: list[ChipGrid]) -> Layout:
        resolution = grids[0].transform[0]
        left = min(g.transform[2] for g in grids)
        top = max(g.transform[5] for g in grids)
        width = int(round((max(g.bounds[2] for g in grids) - left) / resolution))
        height = int(round((top - min(g.bounds[1] for g in grids)) / resolution))
        return cls(grids[0].crs, left, top, resolution, width, height)

    @property
    def transform(self):
        from affine import Affine

        return Affine(self.resolution, 0.0, self.left, 0.0, -self.resolution, self.top)

    def offset(self, grid: ChipGrid) -> tuple[int, int]:
        """(row, column) of a tile's top-left pixel."""
        return (int(round((self.top - grid.transform[5]) / self.resolution)),
                int(round((grid.transform[2] - self.left) / self.resolution)))


@dataclass
class Tiling:
    """What a prediction will do: the area, its date, the items and the tiles to read."""

    area: tuple[float, float, float, float]
    area_name: str
    outline: object  # shapely geometry in lon/lat, or None
    date: dt.date
    items: dict[str, dict]
    items_from: str
    jobs: list[ChipJob]
    layout: Layout
    overlap: int


def check_area_size(spec: TileSpec, area: Area, classes: int,
                    fix: str = "set export.predict.bbox to a smaller area") -> int:
    """The tiles over ``area``, or InputError ending with ``fix`` (what the caller's user can
    change: a recipe field, a CLI option, the drawn area) when it is too large. Refused before
    reading anything: areas that would take hours, or a strip that would not fit in memory.
    Width along the middle latitude on a plane (a great circle from -180 to 180 degrees is
    0 km long)."""
    from instageo.data.split import KM_PER_DEGREE

    size, resolution = spec.chips.size, spec.chips.resolution
    west, south, east, north = area.bbox
    middle = math.radians((south + north) / 2)
    width = max((east - west) * KM_PER_DEGREE * max(math.cos(middle), 0.01) * 1000 / resolution, size)
    height = max((north - south) * KM_PER_DEGREE * 1000 / resolution, size)
    tiles = math.ceil((width - size) / spec.stride + 1) * math.ceil((height - size) / spec.stride + 1)
    strip_bytes = (classes + 1 + 3) * size * width * 4
    problem = (f"{width * height:,.0f} pixels, more than {MAX_AREA_PIXELS:,}" if width * height > MAX_AREA_PIXELS
               else f"{tiles:,} tiles, more than {MAX_TILES:,}" if tiles > MAX_TILES
               else f"{width:,.0f} pixels wide: a row of tiles needs {strip_bytes / 2**30:.1f} GiB"
               if strip_bytes > MAX_STRIP_BYTES else None)
    if problem:
        raise InputError(f"prediction area ({area.declared}: {width:,.0f} x {height:,.0f} pixels at {resolution:g} m) "
                         f"is too large ({problem}); {fix}")
    return tiles


def area_grids(spec: TileSpec, area: Area) -> list[ChipGrid]:
    """The tiles' grids over ``area``, neighbours sharing the spec's overlap."""
    chips = spec.chips
    return tiled_grids(area.bbox, chips.size, chips.resolution, chips.crs, spec.stride)


def tile_area(spec: TileSpec, area: Area, date: dt.date, items: dict[str, dict], items_from: str,
              base_dir: Path, log) -> Tiling:
    """Tiles over ``area`` on ``date``, each to be read from ``items`` (by id; relative
    hrefs from ``base_dir``) with the chips stage's acquisition choice and masks."""
    grids = area_grids(spec, area)
    steps = candidates_for(list(masked_items(items, spec.chips.mask, log).values()), date, spec.chips.time)
    jobs = [tile_job(spec, f"tile{i:05d}", grid, lon, lat, date, steps, base_dir)
            for i, (grid, (lon, lat)) in enumerate(zip(grids, centres_lonlat(grids)))]
    return Tiling(area.bbox, area.declared, area.outline, date, items, items_from, jobs, Layout.of(grids),
                  spec.overlap_pixels)


def tile_job(spec: TileSpec, name: str, grid: ChipGrid, lon: float, lat: float, date: dt.date, steps,
              base_dir: Path) -> ChipJob:
    """A tile to read as the chips stage reads a chip: its steps' candidates, masks, rules."""
    chips, preset = spec.chips, preset_for(spec.source)
    return ChipJob(name, "", lon, lat, date.isoformat(), None, None, grid, steps, bands=list(chips.bands),
                   mask_classes=list(chips.mask.classes), strategy=chips.mask.strategy,
                   max_fraction=chips.mask.max_fraction, buffer=0, ignore_index=chips.label.ignore_index,
                   regression=False, base_dir=str(base_dir), signing=preset.signing, auth=preset.auth)


def inputs_at(spec: TileSpec, items: dict[str, dict], base_dir: Path, date: dt.date, lon: float, lat: float,
              log) -> dict:
    """The model's inputs at a point: a tile centred on it, its acquisitions chosen as predict
    chooses them (by the tile's own cloud cover), and the point's value of each band at each
    step ({"dates", "bands", "values": [step][band]}, NaN as null), or {"reason"} when none."""
    from pyproj import Transformer

    from instageo.data.grid import centred_grid

    chips = spec.chips
    grid = centred_grid(lon, lat, chips.size, chips.resolution, chips.crs)
    steps = candidates_for(list(masked_items(items, chips.mask, log).values()), date, chips.time)
    job = tile_job(spec, "point", grid, lon, lat, date, steps, base_dir)
    stack = read_stack(job, reader_for(job))
    if isinstance(stack, str):
        return {"reason": str(stack)}
    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
    column, row = (int(v) for v in ~grid.affine * (x, y))
    values = stack.image[:, :, min(max(row, 0), chips.size - 1), min(max(column, 0), chips.size - 1)]
    return {"dates": stack.dates, "bands": list(chips.bands),
            "values": [[None if v != v else round(float(v), 5) for v in step] for step in values]}



def project(geometry, crs: str):
    """A lon/lat shapely geometry in ``crs``."""
    import shapely
    from pyproj import Transformer

    return shapely.transform(geometry, Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform,
                             interleaved=False)

"""What prediction needs and how it runs, whoever asks: the predict stage (from a recipe),
`instarun predict` and the app's jobs (from a bundle), embeddings and the benches.

A ``TileSpec`` is the part of a recipe prediction reads: the chip spec (bands, size,
resolution, CRS, acquisition choice, masks), the data source (its preset scales and signs
the reads), the overlap, the batch and the executor. ``tile_area`` lays tiles over an area,
each read by the chips stage's own code (same masks, same temporal selection), so inputs at
prediction match inputs at training; ``run_tiling`` reads, predicts, blends and writes them
(deploy/engine.py) on this machine or in blocks on dask (deploy/blocks.py).
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instageo.data.chip_build import ChipJob, read_stack, reader_for
from instageo.data.chips import candidates_for, masked_items
from instageo.data.grid import ChipGrid, centres_lonlat, tiled_grids
from instageo.deploy import onnx
from instageo.deploy.engine import InputColour, Layout, Outputs, TileModel, predict_rows
from instageo.deploy.stac_meta import write_prediction_item
from instageo.errors import InputError
from instageo.recipe.models import ChipSpec, Executor, LocalExecutor, Source
from instageo.recipe.presets import preset_for

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
    executor: Executor = LocalExecutor()
    block_tiles: int = 64

    @classmethod
    def of_recipe(cls, recipe) -> TileSpec:
        spec = recipe.export.predict
        return cls(recipe.data.chips, recipe.data.source, spec.overlap, spec.batch_size,
                   "batch_size" in spec.model_fields_set, spec.executor, spec.block_tiles)

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
    jobs = [_tile_job(spec, f"tile{i:05d}", grid, lon, lat, date, steps, base_dir)
            for i, (grid, (lon, lat)) in enumerate(zip(grids, centres_lonlat(grids)))]
    return Tiling(area.bbox, area.declared, area.outline, date, items, items_from, jobs, Layout.of(grids),
                  spec.overlap_pixels)


def _tile_job(spec: TileSpec, name: str, grid: ChipGrid, lon: float, lat: float, date: dt.date, steps,
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
    job = _tile_job(spec, "point", grid, lon, lat, date, steps, base_dir)
    stack = read_stack(job, reader_for(job))
    if isinstance(stack, str):
        return {"reason": str(stack)}
    x, y = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform(lon, lat)
    column, row = (int(v) for v in ~grid.affine * (x, y))
    values = stack.image[:, :, min(max(row, 0), chips.size - 1), min(max(column, 0), chips.size - 1)]
    return {"dates": stack.dates, "bands": list(chips.bands),
            "values": [[None if v != v else round(float(v), 5) for v in step] for step in values]}


def run_tiling(spec: TileSpec, tiling: Tiling, model_path: Path, bundle: dict, folder: Path, track, log,
               cancel=None) -> tuple[dict[str, str], dict]:
    """Read, predict, blend and write the COGs of a tiling into ``folder``: (files, summary).
    ``track(iterable, total, description)`` reports progress; ``cancel`` (a threading.Event)
    stops it between tiles with engine.Cancelled."""
    chips, layout = spec.chips, tiling.layout
    colour = InputColour.of(list(chips.bands), bundle)
    outline = project(tiling.outline, layout.crs) if tiling.outline is not None else None
    mosaic: dict[str, str] = {}  # the dask executor's VRTs over its blocks
    batch_size = _batch_size(spec, model_path)
    if spec.executor.kind == "dask":
        from instageo.deploy.blocks import BlockSpec, predict_blocks

        blocks = BlockSpec(str(folder), layout, bundle, str(model_path), chips.size, tiling.overlap,
                           list(chips.bands), batch_size, outline)
        outputs, mosaic = predict_blocks(tiling.jobs, blocks, spec.block_tiles, spec.executor, track, log)
    else:
        model = TileModel(model_path, bundle, chips.size, tiling.overlap, colour)
        outputs = Outputs(folder, layout, bundle, colour=colour, outline=outline)
        with outputs:
            predict_rows(tiling.jobs, model, batch_size, outputs, track, cancel)
    if outputs.class_pixels.sum() == 0:
        outputs.discard()
        raise InputError(f"prediction: no imagery for the area {tuple(round(v, 5) for v in tiling.area)} "
                         f"({tiling.area_name}) around {tiling.date}")
    summary = {"bbox": list(tiling.area), "date": tiling.date.isoformat(), "tiles": len(tiling.jobs),
               "items_from": tiling.items_from, "items": len(tiling.items), "width": layout.width,
               "height": layout.height, "batch_size": batch_size,
               "class_pixels": dict(zip(bundle["classes"], outputs.class_pixels.tolist()))}
    if mosaic:
        summary["blocks"] = len(list((folder / "blocks").iterdir()))
    files = {**outputs.finish(), **mosaic}
    files["item"] = write_prediction_item(folder, files, tiling.date.isoformat(),
                                          f"{bundle['backbone']} depth {bundle['depth']}")
    return files, summary


def _batch_size(spec: TileSpec, model_path: Path) -> int:
    """The spec's batch when the user chose it, or on a CPU (where 2 is as fast as 8); on a
    GPU otherwise the fastest batch its memory holds (onnx.fastest_batch)."""
    if spec.batch_fixed or not onnx.gpu_present():
        return spec.batch_size
    chips = spec.chips
    steps, size = chips.time.steps, chips.size
    tile = (np.zeros((1, len(chips.bands), steps, size, size), np.float32), np.zeros((1, steps, 2), np.float32),
            np.zeros((1, 2), np.float32))
    return onnx.fastest_batch(onnx.session(model_path), tile, spec.batch_size)


FLOAT16_AGREEMENT = 0.99  # the float16 model's classes against PyTorch's, at least


def choose_model(bundle: dict, tolerance_pp: float | None, gpu: bool | None = None) -> tuple[str, str]:
    """The bundle's model file to predict with, and why. On a GPU: float16 when the export
    made one that agrees with PyTorch, else float32 (int8's kernels are CPU ones). On a CPU:
    int8 when the export made one and it lost at most ``tolerance_pp`` on val (decided on
    val, never on test)."""
    if onnx.gpu_present() if gpu is None else gpu:
        half = bundle.get("float16")
        if not bundle.get("model_fp16") or not half:
            return bundle["model"], "float32 on the GPU: no float16 model in the bundle (export.onnx.float16)"
        if half["argmax_agreement"] < FLOAT16_AGREEMENT:
            return bundle["model"], (f"float32 on the GPU: the float16 model agrees with PyTorch on only "
                                     f"{100 * half['argmax_agreement']:.1f}% of pixels")
        return bundle["model_fp16"], (f"float16 on the GPU: agrees with PyTorch on "
                                      f"{100 * half['argmax_agreement']:.2f}% of pixels")
    check = bundle.get("int8")
    if not bundle.get("model_int8") or not check:
        return bundle["model"], "float32: no int8 model in the bundle (export.onnx.quantize)"
    if tolerance_pp is None:
        return bundle["model"], "float32: export.predict.int8_tolerance_pp is null"
    val = check.get("val")
    if val is None:
        return bundle["model"], "float32: no val split to judge the int8 model on"
    if check["metric"] == "miou":
        lost, allowed = -100 * val["delta"], tolerance_pp
        said = f"val mIoU {100 * val['delta']:+.2f} pp"
    else:
        lost, allowed = val["delta"], tolerance_pp / 100 * val["float32"]
        said = f"val RMSE {val['delta']:+.4g} ({100 * val['delta'] / max(val['float32'], 1e-12):+.2f}%)"
    if lost <= allowed:
        return bundle["model_int8"], f"int8: {said}, within {tolerance_pp:g} (export.predict.int8_tolerance_pp)"
    return bundle["model"], f"float32: int8 {said}, beyond {tolerance_pp:g} (export.predict.int8_tolerance_pp)"


def project(geometry, crs: str):
    """A lon/lat shapely geometry in ``crs``."""
    import shapely
    from pyproj import Transformer

    return shapely.transform(geometry, Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform,
                             interleaved=False)

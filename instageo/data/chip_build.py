"""Build one chip: pick an acquisition per time step by the chip's own cloud cover, read it,
mask it, label it, write it. A plain function of plain data, so threads or dask workers can
run it, and deterministic, so the same job always writes the same bytes. (Imports are at
module level: jobs start on many threads at once, and first imports must not race.)
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import rasterio
import shapely
from pyproj import Transformer
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.features import rasterize
from shapely.geometry import box, shape

from instageo.data.grid import ChipGrid
from instageo.data.masks import decode
from instageo.recipe.presets import BandAsset
from instageo.data.reader import AssetReader, RowReads, RunPixels, is_remote
from instageo.files import sha256_file, write_bytes_atomic


@dataclass(frozen=True)
class Candidate:
    id: str
    date: str
    bands: dict[str, dict]  # band -> BandAsset fields
    mask: dict | None
    mask_kind: str | None


@dataclass(frozen=True)
class ChipJob:
    chip_id: str
    observation: str
    lon: float
    lat: float
    date: str
    label: float | None  # a point's label; None for label rasters
    label_raster: str | None
    grid: ChipGrid
    steps: list[list[Candidate]]  # per time step (oldest first): candidates, preferred first
    bands: list[str]
    mask_classes: list[str]
    strategy: str
    max_fraction: float
    buffer: int
    ignore_index: int
    regression: bool
    base_dir: str  # where relative hrefs live (the search stage folder)
    signing: str | None = None
    auth: str | None = None
    label_polygons: str | None = None  # GeoJSON (lon/lat, property 'class') to rasterise
    # other point observations inside the chip (lon, lat, label): labelled too, under the own one
    neighbours: tuple[tuple[float, float, float], ...] = ()
    remap: tuple[tuple[float, float], ...] = ()  # label raster: (pixel value, class index); others unlabelled


@dataclass
class ChipRecord:
    chip_id: str
    observation: str
    lon: float
    lat: float
    crs: str
    date: str
    status: str  # "ok" or "skipped"
    reason: str = ""
    items: list[str] = field(default_factory=list)
    dates: list[str] = field(default_factory=list)
    cloud_fraction: float = 0.0
    nodata_fraction: float = 0.0
    image: str = ""
    label: str = ""
    image_sha256: str = ""
    label_sha256: str = ""
    unreadable: list[str] = field(default_factory=list)  # acquisitions passed over: unreadable


# rasterize() of rasterio 1.4 builds its in-memory raster before giving it our transform and
# warns that it has none; the labels come out on the right grid (tests check polygon centres)
warnings.filterwarnings("ignore", category=NotGeoreferencedWarning, module=r"rasterio\.features")

_READERS: dict = {}
_UNREADABLE: set[str] = set()  # acquisitions found unreadable in this process
log = logging.getLogger("instageo.chips")


# a missing, truncated or corrupt input: the chip is skipped with reason "unreadable"
READ_ERRORS = (RasterioError, CPLE_BaseError)


def reader_for(job: ChipJob, block_cache_bytes: int | None = None) -> AssetReader:
    key = (job.base_dir, job.signing, job.auth, block_cache_bytes)
    if key not in _READERS:  # one per process: it keeps open files per thread
        _READERS[key] = AssetReader(Path(job.base_dir), job.signing, job.auth, block_cache_bytes)
    return _READERS[key]


def build_chip(job: ChipJob, out_dir: str) -> ChipRecord:
    """Build (or, if its record exists, reload) one chip into ``out_dir``."""
    out = Path(out_dir)
    record_path = out / "records" / f"{job.chip_id}.json"
    if record_path.exists():  # done before an interruption
        return ChipRecord(**json.loads(record_path.read_text()))
    try:
        record = _build(job, out)
    except READ_ERRORS as exc:
        # rasterio's "Read failed. See previous exception" hides the file in its cause
        detail = str(exc.__cause__ or exc) or type(exc).__name__
        log.warning("chip %s skipped: unreadable input (%s)", job.chip_id, detail.splitlines()[0][:300])
        record = ChipRecord(job.chip_id, job.observation, job.lon, job.lat, job.grid.crs, job.date,
                            status="skipped", reason="unreadable")
    record_path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(record_path, json.dumps(asdict(record), sort_keys=True).encode())
    return record


@dataclass
class Stack:
    """A chip's imagery: (T, C, H, W) float32 with NaN where masked or missing."""

    image: np.ndarray
    invalid: np.ndarray  # (T, H, W)
    items: list[str]
    dates: list[str]
    cloud_fraction: float
    unreadable: list[str] = field(default_factory=list)  # acquisitions passed over


def read_stack(job: ChipJob, reader: AssetReader) -> Stack | str:
    """Pick each step's acquisition by the chip's own masked fraction and read it; the
    reason ("no_scene", "cloudy", "no_data") when a step cannot be filled. Training chips and
    prediction windows both come from here, so their inputs are made the same way."""
    return read_row_stacks([job], reader)[0]


def read_row_stacks(jobs: list[ChipJob], reader: AssetReader) -> list[Stack | str]:
    """read_stack of each of a run of tiles along one tile row that share their steps and chip
    spec (a prediction's; a chip is a run of one): each asset is read once for the whole run
    (RowReads) and each tile's acquisitions are picked by its own masked fraction, counted
    from the run's column sums, so a tile gets the stack it would get alone."""
    job = jobs[0]
    run = RunLook(RowReads(reader, [j.grid for j in jobs]), job)
    try:
        run.read_ahead()
        return [_tile_stack(run, tile, tile_job) for tile, tile_job in enumerate(jobs)]
    finally:
        run.close()


def _tile_stack(run: RunLook, tile: int, tile_job: ChipJob) -> Stack | str:
    """One tile's stack (or reason) from its run's looks."""
    job = run.job
    chosen: list[tuple[Candidate, Look, int]] = []  # with the look that holds the tile, and its index there
    fractions: list[float] = []
    unreadable: list[str] = []
    for candidates in job.steps:
        if not candidates:
            return "no_scene"
        picked, least_nodata = None, 1.0
        for candidate in candidates:
            if any(c.id == candidate.id for c, _, _ in chosen) or candidate.id in unreadable:
                continue
            try:
                look, index = run.look(candidate, tile)
            except READ_ERRORS as exc:  # a missing or broken asset: the next acquisition, if any
                first = candidate.id not in _UNREADABLE  # one warning per acquisition, not per chip
                _UNREADABLE.add(candidate.id)
                log.log(logging.WARNING if first else logging.DEBUG,
                        "chip %s: acquisition %s passed over: unreadable input (%s)", tile_job.chip_id,
                        candidate.id, str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
                unreadable.append(candidate.id)
                continue
            if look.mask_fraction[index] > job.max_fraction:  # ruled out by its mask: bands unseen
                least_nodata = min(least_nodata, look.mask_nodata[index])
                continue
            least_nodata = min(least_nodata, look.nodata[index])
            if look.fraction[index] <= job.max_fraction:
                picked = (candidate, look, index)
                break
        if picked is None:  # no_data when even the fullest candidate lacks too much imagery
            if unreadable:  # one that could not be read might have served
                return Unreadable(unreadable)
            return "no_data" if least_nodata > job.max_fraction else "cloudy"
        chosen.append(picked)
        fractions.append(float(picked[1].fraction[picked[2]]))
    return run.stack(chosen, fractions, unreadable)


@dataclass
class Look:
    """An acquisition across a run of tiles, with per tile the fractions of its pixels masked
    or without imagery (``mask_fraction``) and without imagery (``mask_nodata``) by its mask,
    and once its bands are read, the same counting the bands' nodata too (``fraction``,
    ``nodata``, ``invalid``: masked or without imagery)."""

    mask_fraction: np.ndarray
    mask_nodata: np.ndarray
    mask_invalid: RunPixels  # (H, W) bool: masked or without imagery, by the mask
    fill: RunPixels  # (H, W) bool: without imagery, by the mask
    bands: RunPixels | None = None  # (C, H, W) float32
    invalid: RunPixels | None = None  # (H, W) bool
    fraction: np.ndarray | None = None
    nodata: np.ndarray | None = None


class RunLook:
    """The acquisitions of a run (read_row_stacks), each looked at once: its mask first, and its
    bands only where some tile's mask keeps it (cheap: a cloudy acquisition's bands are never
    read). Failures are kept, so every tile that reaches a broken acquisition hears of it.
    ``looks``: by acquisition id, and (id, "bands") for the bands' read or its error."""

    def __init__(self, reads: RowReads, job: ChipJob):
        self.reads, self.job = reads, job
        self.area = job.grid.size ** 2
        self.looks: dict[str, Look | Exception] = {}
        self.alone: dict[int, RunLook] = {}  # tiles read alone after a read across the run failed

    def look(self, candidate: Candidate, tile: int) -> tuple[Look, int]:
        """The acquisition's look by its mask, and by its bands too where ``tile``'s mask keeps
        it, and the tile's index in it. Where reading it across the run failed, the tile's own
        read decides (the run's error may lie under other tiles only): it raises the read error
        the tile alone would."""
        try:
            look = self._once(candidate.id, lambda: self._look(candidate))
            if look.mask_fraction[tile] <= self.job.max_fraction and look.bands is None:
                self._once((candidate.id, "bands"), lambda: self._read_bands(candidate, look))
            return look, tile
        except READ_ERRORS:
            if len(self.reads.grids) == 1:
                raise
        alone = self.alone.get(tile)
        if alone is None:
            reads = RowReads(self.reads.reader, [self.reads.grids[tile]])
            alone = self.alone[tile] = RunLook(reads, self.job)
        return alone.look(candidate, 0)[0], 0

    def close(self) -> None:
        """Drop every look and read: a kept read error's traceback holds the run, which would
        keep its arrays until the garbage collector found the cycle."""
        for alone in self.alone.values():
            alone.close()
        self.looks.clear()
        self.reads.results.clear()

    def _once(self, key, compute):
        if key not in self.looks:
            try:
                self.looks[key] = compute()
            except READ_ERRORS as exc:
                self.looks[key] = exc
        if isinstance(self.looks[key], Exception):
            raise self.looks[key]
        return self.looks[key]

    def _look(self, candidate: Candidate) -> Look:
        masked, fill = self._mask(candidate)
        invalid = masked.apply(np.logical_or, fill)
        return Look(invalid.counts() / self.area, fill.counts() / self.area, invalid, fill)

    def _read_bands(self, candidate: Candidate, look: Look) -> Look:
        assets = [BandAsset(**candidate.bands[b]) for b in self.job.bands]
        for asset in assets:  # remote: in flight together
            self.reads.start(asset)
        bands = RunPixels.stack([self.reads.read(asset) for asset in assets])
        nodata = look.fill.apply(lambda fill, values: fill | np.isnan(values).any(axis=0), bands)
        look.invalid = look.mask_invalid.apply(np.logical_or, nodata)
        look.fraction, look.nodata = look.invalid.counts() / self.area, nodata.counts() / self.area
        look.bands = bands  # last: a look with bands is complete
        return look

    def _mask(self, candidate: Candidate) -> tuple[RunPixels, RunPixels]:
        """(masked, without imagery) by the acquisition's mask asset (none: nothing masked)."""
        reads = self.reads
        if candidate.mask is None or not candidate.mask_kind:
            nothing = RunPixels(reads.lefts, reads.first.size, wide=np.zeros((reads.first.size, reads.width), bool))
            return nothing, nothing
        decoded = reads.read(BandAsset(**candidate.mask), categorical=True).apply(
            lambda values: np.stack(decode(values, candidate.mask_kind, self.job.mask_classes)))
        return decoded.apply(lambda both: both[0]), decoded.apply(lambda both: both[1])

    def read_ahead(self) -> None:
        """Over a network: every step's preferred acquisition, masks first and then the bands of
        those some tile's mask keeps, all in flight together (2 round trips a run instead of 7
        a step). Only a head start: the tiles still decide step by step, so the stacks are the
        same."""
        if not reads_remote(self.job):
            return  # local files: nothing to wait for
        firsts = [steps[0] for steps in self.job.steps if steps]
        for candidate in firsts:
            if candidate.mask is not None and candidate.mask_kind:
                self.reads.start(BandAsset(**candidate.mask), categorical=True)
        for candidate in firsts:
            try:
                look = self._once(candidate.id, lambda: self._look(candidate))
            except READ_ERRORS:
                continue  # the tiles meet it again and say so
            if (look.mask_fraction <= self.job.max_fraction).any():
                for band in self.job.bands:
                    self.reads.start(BandAsset(**candidate.bands[band]))

    def stack(self, chosen: list[tuple[Candidate, Look, int]], fractions: list[float], unreadable: list[str]) -> Stack:
        """A tile's stack of its chosen acquisitions (each with the look that holds the tile and
        its index there), NaN where masked or without imagery."""
        invalid = np.stack([look.invalid.tile(index) for _, look, index in chosen])  # (T, H, W)
        if self.job.strategy == "any":
            invalid = np.broadcast_to(invalid.any(axis=0), invalid.shape)
        image = np.stack([look.bands.tile(index) for _, look, index in chosen])  # (T, C, H, W)
        image[np.broadcast_to(invalid[:, None], image.shape)] = np.nan
        return Stack(image, invalid, [c.id for c, _, _ in chosen], [c.date[:10] for c, _, _ in chosen],
                     float(np.mean(fractions)), unreadable)


class Unreadable(str):
    """The reason "unreadable", naming the acquisitions that could not be read."""

    def __new__(cls, items: list[str]):
        reason = super().__new__(cls, "unreadable")
        reason.items = list(items)
        return reason


def _build(job: ChipJob, out: Path) -> ChipRecord:
    reader = reader_for(job)
    base = dict(chip_id=job.chip_id, observation=job.observation, lon=job.lon, lat=job.lat,
                crs=job.grid.crs, date=job.date)
    stack = read_stack(job, reader)
    if isinstance(stack, str):
        return ChipRecord(**base, status="skipped", reason=str(stack),
                          unreadable=getattr(stack, "items", []))
    label = _label(job, reader, stack.invalid.any(axis=0))
    if label is None:
        return ChipRecord(**base, status="skipped", reason="no_labels")
    image_path, label_path = f"chips/{job.chip_id}.tif", f"labels/{job.chip_id}.tif"
    descriptions = [f"t{t}_{b}" for t in range(len(job.steps)) for b in job.bands]
    write_geotiff(out / image_path, stack.image.reshape(-1, *stack.image.shape[2:]), job.grid, np.nan,
                  descriptions, {"items": ",".join(stack.items), "dates": ",".join(stack.dates)})
    write_geotiff(out / label_path, label[None], job.grid,
                  None if job.regression else job.ignore_index, ["label"], {})
    return ChipRecord(
        **base, status="ok", items=stack.items, dates=stack.dates,
        cloud_fraction=round(stack.cloud_fraction, 6),
        nodata_fraction=round(float(stack.invalid.mean()), 6),
        image=image_path, label=label_path,
        image_sha256=sha256_file(out / image_path), label_sha256=sha256_file(out / label_path),
        unreadable=stack.unreadable,
    )


def reads_remote(job: ChipJob) -> bool:
    """Whether the job's imagery comes over a network (its first acquisition's first band
    says: the acquisitions of one search come from one store)."""
    first = next((candidate for step in job.steps for candidate in step), None)
    return first is not None and is_remote(next(iter(first.bands.values()))["href"])


def _label(job: ChipJob, reader, no_imagery: np.ndarray) -> np.ndarray | None:
    if job.label_raster is not None:
        with _open(job.label_raster) as dataset:  # outside the raster counts as its nodata
            fill = dataset.nodata if dataset.nodata is not None else job.ignore_index
        asset = BandAsset(job.label_raster, nodata=fill)
        raw = reader.read(asset, job.grid, categorical=True).astype(np.float32)
        invalid = no_imagery | (raw == fill) | np.isnan(raw)
        if job.remap:
            mapped = np.full(raw.shape, np.nan, np.float32)
            for source, target in job.remap:
                mapped[raw == source] = target
            raw, invalid = mapped, invalid | np.isnan(mapped)
        if not job.regression:
            invalid |= raw < 0  # negative class ids mean "not labelled" (e.g. Sen1Floods11's -1)
        label = raw
    elif job.label_polygons is not None:
        label = _rasterise(job.label_polygons, job.grid)
        invalid = no_imagery | np.isnan(label)
    else:
        label = _paint_points(job)
        invalid = no_imagery | np.isnan(label)
    if job.regression:
        label = np.where(invalid, np.nan, label).astype(np.float32)
        return None if np.isnan(label).all() else label
    label = np.where(invalid, job.ignore_index, label).astype(np.int16)
    return None if (label == job.ignore_index).all() else label


def _paint_points(job: ChipJob) -> np.ndarray:
    """The labels of every point observation in the chip, each on its own pixel and the
    ``buffer`` around it; the chip's own point last, so it wins where they meet."""
    from pyproj import Transformer

    size, b = job.grid.size, job.buffer
    label = np.full((size, size), np.nan, np.float32)
    points = [*job.neighbours, (job.lon, job.lat, job.label)]
    xs, ys = Transformer.from_crs("EPSG:4326", job.grid.crs, always_xy=True).transform(
        [p[0] for p in points], [p[1] for p in points])
    inverse = ~job.grid.affine
    for (_, _, value), x, y in zip(points, xs, ys):
        column, row = (int(np.floor(v)) for v in inverse * (x, y))
        if -b <= row < size + b and -b <= column < size + b:
            label[max(row - b, 0):max(row + b + 1, 0), max(column - b, 0):max(column + b + 1, 0)] = value
    return label


_POLYGONS: dict = {}


def _rasterise(path: str, grid: ChipGrid) -> np.ndarray:
    """Classes of the polygons covering each pixel of the chip (NaN where none)."""
    if path not in _POLYGONS:
        features = json.loads(Path(path).read_text())["features"]
        shapes = [shape(f["geometry"]) for f in features]
        _POLYGONS[path] = (shapely.STRtree(shapes), shapes, [f["properties"]["class"] for f in features])
    tree, shapes, classes = _POLYGONS[path]
    to_grid = Transformer.from_crs("EPSG:4326", grid.crs, always_xy=True).transform
    to_lonlat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform
    footprint = shapely.transform(box(*grid.bounds), to_lonlat, interleaved=False)
    hits = sorted(int(i) for i in tree.query(footprint))
    pairs = [(shapely.transform(shapes[i], to_grid, interleaved=False), classes[i]) for i in hits]
    if not pairs:
        return np.full((grid.size, grid.size), np.nan, np.float32)
    return rasterize(pairs, out_shape=(grid.size, grid.size), transform=grid.affine,
                     fill=np.nan, dtype="float32")


def _open(path: str):
    return rasterio.open(path)


def write_geotiff(path: Path, array: np.ndarray, grid: ChipGrid, nodata, descriptions: list[str],
                  tags: dict[str, str]) -> None:
    """A compressed (tiled where the size allows) GeoTIFF, written atomically. GDAL builds it
    in memory and Python writes it: GDAL does not always report a failed write to disk (a
    full disk could leave a broken chip looking built), Python raises OSError."""
    from rasterio.io import MemoryFile

    path.parent.mkdir(parents=True, exist_ok=True)
    count, height, width = array.shape
    # ZSTD level 1: as small as DEFLATE on reflectance, three times faster to write
    profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=array.dtype,
                   crs=grid.crs, transform=grid.affine, nodata=nodata, compress="zstd", zstd_level=1,
                   predictor=3 if array.dtype.kind == "f" else 2, interleave="band")
    if width % 16 == 0 and height % 16 == 0:
        profile.update(tiled=True, blockxsize=min(width, 256), blockysize=min(height, 256))
    with MemoryFile() as memory:
        with memory.open(**profile) as dataset:
            dataset.write(array)
            for index, text in enumerate(descriptions, start=1):
                dataset.set_band_description(index, text)
            dataset.update_tags(**tags)
        data = memory.read()
    write_bytes_atomic(path, data, durable=False)

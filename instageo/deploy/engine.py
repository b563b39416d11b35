"""The prediction engine under the predict stage, the dask blocks and embeddings: tiles are
read ahead on threads, run through an ONNX model in batches, blended with a smooth window
into a strip one tile row high, and every finished row is written out, so an area of any
height streams through in the memory of one tile row.

``predict_rows`` is the loop; ``TileModel`` prepares a tile and runs the model (normalising
as bundle.json says), ``Layout`` places tiles in the area, ``Strip`` blends them and
``Outputs`` writes the COGs (prediction, confidence, rgb) and reads the last pixel back.
It knows no recipe and no stage: what to read comes as ``ChipJob``s, what to run as a
bundle; the callers (predict.py, blocks.py, embeddings.py) choose the executor.
"""

from __future__ import annotations

import functools
import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instageo.data.chip_build import ChipJob, Stack, read_stack, reader_for, reads_remote
from instageo.data.grid import ChipGrid
from instageo.data.normalise import STD_FLOOR, Normaliser
from instageo.deploy import onnx
from instageo.model import coordinates

NODATA_CLASS = 255
# tiles read at once. Remote files: 4 (a read mostly waits on the network; each tile's own
# reads overlap too). Local files: decoding is CPU the model wants, and on 2 cores one thread
# kept ahead of an int8 student while 4 made the model itself 25% slower (end to end / model
# only 0.67 vs 0.71, bench/profile_predict.py): one thread per 2 cores
REMOTE_READ_THREADS = 4
# GDAL's cache of decoded blocks while predicting: tiles come row by row, so only the blocks of
# the last tile row are read again. 256 MiB (the chips stage's) made peak memory grow with the
# area (+25% from 513 to 1026 px squares); 32 MiB: +6%, the same speed (bench/predict.py)
BLOCK_CACHE_BYTES = 32 << 20


class Cancelled(Exception):
    """A prediction stopped by its caller's cancel event, between two tiles."""


def predict_rows(jobs: list[ChipJob], model: TileModel, batch_size: int, outputs: Outputs, track,
                 cancel=None) -> None:
    """Read, predict and blend row-major tiles, writing every finished row ``outputs`` holds.
    A batch is the readable tiles among jobs[k * batch_size:(k + 1) * batch_size]: a tile's
    probabilities then depend only on its own batch (int8's quantisation scale is the whole
    batch's), so blocks that start on a batch boundary give the single process's bytes.
    ``cancel`` (a threading.Event), once set, stops it before the next tile with Cancelled."""
    layout = outputs.layout
    strip = Strip(layout, model.channels, model.weight.shape[0], rgb=model.colour is not None,
                  top=layout.offset(jobs[0].grid)[0] if jobs else 0)

    def finish_rows_above(row: int) -> None:  # tiles arrive in rows: rows above `row` are final
        while row > strip.top and strip.top < outputs.rows[1]:
            outputs.write_blend(strip.top, *strip.take(min(row - strip.top, strip.size)))

    def place(predicted: list) -> None:
        for grid, probabilities, weight, rgb in predicted:
            finish_rows_above(layout.offset(grid)[0])
            strip.add(grid, probabilities, weight, rgb)

    threads = read_threads(jobs)
    with ThreadPoolExecutor(threads) as pool:
        batch: list = []
        stacks = read_ahead(pool, jobs, model.prepare, depth=2 * batch_size + threads)
        for index, (job, tile) in enumerate(track(stacks, total=len(jobs), description="tiles")):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if tile is not None:
                batch.append((job.grid, *tile))
            if (index + 1) % batch_size == 0:
                place(model.predict(batch))
                batch = []
        place(model.predict(batch))
        finish_rows_above(layout.height)


def read_threads(jobs: list[ChipJob]) -> int:
    """Tiles to read at once: REMOTE_READ_THREADS from a remote store, else one thread per two
    cores (every core when a GPU runs the model)."""
    if jobs and reads_remote(jobs[0]):
        return REMOTE_READ_THREADS
    cores = os.cpu_count() or 1
    return cores if onnx.gpu_present() else max(1, cores // 2)


def read_ahead(pool: ThreadPoolExecutor, jobs: list[ChipJob], prepare, depth: int):
    """(job, prepare(job, stack)) in order, reading at most ``depth`` tiles ahead of the consumer
    (a plain pool.map would read the whole area into memory if reading outpaced the model).
    Tiles go to the threads one by one: runs of neighbours per thread, as the chips stage
    reads, made more requests and were slower over HTTP (bench/RESULTS.md)."""
    pending: deque = deque()

    def read(job: ChipJob):
        return prepare(job, read_stack(job, reader_for(job, BLOCK_CACHE_BYTES)))

    for job in jobs:
        pending.append((job, pool.submit(read, job)))
        if len(pending) >= depth:
            done, future = pending.popleft()
            yield done, future.result()
    while pending:
        done, future = pending.popleft()
        yield done, future.result()


def blend_window(size: int, overlap: int) -> np.ndarray:
    """Weights that ramp smoothly (sin^2) over the overlap at each edge, 1 inside."""
    ramp = np.ones(size, np.float32)
    if overlap > 0:
        edge = np.sin(np.linspace(0, np.pi / 2, overlap + 2)[1:-1]) ** 2
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


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


class Strip:
    """Blended class probabilities of the rows not yet written, ``size`` rows from ``top``.

    Tiles are added one tile row after another; ``take(n)`` hands over the first n rows
    (normalised) and moves the strip down by n.
    """

    def __init__(self, layout: Layout, classes: int, size: int, rgb: bool, top: int = 0):
        self.layout, self.size, self.top = layout, size, top
        self.probabilities = np.zeros((classes, size, layout.width), np.float32)
        self.weights = np.zeros((size, layout.width), np.float32)
        self.rgb = np.zeros((3, size, layout.width), np.float32) if rgb else None

    def add(self, grid: ChipGrid, probabilities: np.ndarray, weight: np.ndarray,
            rgb: np.ndarray | None = None) -> None:
        row, column = self.layout.offset(grid)
        row -= self.top
        if row < 0 or row + grid.size > self.size:
            raise ValueError(f"tile at row {row + self.top} outside the strip at {self.top}")
        window = (slice(row, row + grid.size), slice(column, column + grid.size))
        self.probabilities[(slice(None), *window)] += probabilities * weight
        self.weights[window] += weight
        if self.rgb is not None and rgb is not None:
            self.rgb[(slice(None), *window)] += np.nan_to_num(rgb) * weight

    def take(self, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """The blend of the first ``rows`` rows: the weighted mean of every channel (C, rows, W),
        where any tile covered them (rows, W), and the 8-bit input colour."""
        if not 0 <= rows <= self.size:
            raise ValueError(f"cannot take {rows} rows from a strip of {self.size}")
        weights = self.weights[:rows]
        covered = weights > 0
        safe = np.where(covered, weights, 1)
        mean = self.probabilities[:, :rows] / safe
        rgb = None
        if self.rgb is not None:  # display values 0-1 (InputColour) stretched to 1-255; 0 where empty
            rgb = np.where(covered, np.clip(self.rgb[:, :rows] / safe * 254 + 1, 1, 255), 0).astype(np.uint8)
        for array in (self.probabilities, self.weights, self.rgb):
            if array is not None:  # shift up by `rows` and clear the bottom
                array[..., :self.size - rows, :] = array[..., rows:, :]
                array[..., self.size - rows:, :] = 0
        self.top += rows
        return mean, covered, rgb


def classes_of(probabilities: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes (uint8, NODATA_CLASS where nothing covered) and confidence (float32, NaN there)."""
    classes = np.where(covered, probabilities.argmax(0), NODATA_CLASS).astype(np.uint8)
    confidence = np.where(covered, probabilities.max(0), np.nan).astype(np.float32)
    return classes, confidence


@dataclass(frozen=True)
class InputColour:
    """How rgb.tif shows a step's input, as three display channels from 0 to 1. True colour:
    red, green, blue reflectance 0-0.3. Radar (no red/green/blue, but VV and VH): VV, VH and
    VV - VH, each as the band's z-score (the bundle's normalisation) from -2.5 to 2.5, which
    holds whatever the units (dB or linear)."""

    name: str
    bands: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def of(cls, bands: list[str], bundle: dict) -> InputColour | None:
        if {"red", "green", "blue"} <= set(bands):
            return cls("true colour", tuple(bands.index(b) for b in ("red", "green", "blue")))
        if {"vv", "vh"} <= set(bands):
            picked = tuple(bands.index(b) for b in ("vv", "vh"))
            norm = bundle["normalization"]
            return cls("false colour (VV, VH, VV-VH)", picked, tuple(norm["mean"][i] for i in picked),
                       tuple(max(norm["std"][i], STD_FLOOR) for i in picked))
        return None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(3, H, W) display values of one step's (C, H, W) input (NaN stays NaN)."""
        if not self.mean:
            return image[list(self.bands)] / np.float32(0.3)
        vv, vh = ((image[i] - m) / s for i, m, s in zip(self.bands, self.mean, self.std))
        return (np.stack([vv, vh, vv - vh]) + 2.5) / 5


class TileModel:
    """The ONNX student applied to batches of tile stacks (batches may span tile rows)."""

    def __init__(self, path: Path, bundle: dict, size: int, overlap: int, colour: InputColour | None):
        self.session = onnx.session(path)
        self.channels = len(bundle["classes"])  # what it blends per pixel
        self.normalise = Normaliser.of_bundle(bundle)
        self.weight = blend_window(size, overlap)
        self.colour = colour

    def prepare(self, job: ChipJob, stack: Stack | str) -> tuple | None:
        """A read tile and its model inputs (pixels normalised, nodata as 0, (C, T, H, W); the
        steps' dates and the tile centre for TL models); None for a skipped tile. The reading
        threads call this, so the model's thread does not wait on it."""
        if isinstance(stack, str):
            return None
        return (stack, self.normalise(stack.image), coordinates.temporal(stack.dates),
                coordinates.location(job.lon, job.lat))

    def predict(self, batch: list) -> list[tuple]:
        """(grid, class probabilities, blending weight, true colour) per (grid, stack, inputs...)."""
        if not batch:
            return []
        inputs = tuple(np.stack([entry[i] for entry in batch]) for i in (2, 3, 4))
        probabilities = onnx.run(self.session, inputs, len(batch))  # logits, made softmax in place
        probabilities -= probabilities.max(axis=1, keepdims=True)
        np.exp(probabilities, out=probabilities)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        predicted = []
        for (grid, stack, *_), tile in zip(batch, probabilities):
            no_imagery = stack.invalid.all(axis=0)  # nothing seen in any step: leave it to others
            rgb = self.colour(stack.image[-1]) if self.colour else None
            predicted.append((grid, tile, np.where(no_imagery, 0.0, self.weight), rgb))
        return predicted


class Outputs:
    """Finished rows go to plain GeoTIFFs in the stage folder (one compressed strip per row,
    each written once); ``finish`` adds overviews and copies them to COGs. ``rows``: the
    layout's rows these files hold (a block of the area; default all), georeferenced in place."""

    def __init__(self, folder: Path, layout: Layout, bundle: dict, colour: InputColour | None, outline=None,
                 rows: tuple[int, int] | None = None):
        self.folder, self.layout, self.bundle, self.outline, self.colour = folder, layout, bundle, outline, colour
        self.rows = rows or (0, layout.height)
        self.names = ["prediction", "confidence"] + (["rgb"] if colour else [])
        self.class_pixels = np.zeros(len(bundle["classes"]), np.int64)
        self.datasets: dict = {}

    def __enter__(self) -> Outputs:
        import rasterio
        from affine import Affine

        for name, dtype, count, nodata in (("prediction", "uint8", 1, NODATA_CLASS),
                                           ("confidence", "float32", 1, np.nan), ("rgb", "uint8", 3, 0)):
            if name not in self.names:
                continue
            dataset = rasterio.open(
                self._raw(name), "w", driver="GTiff", width=self.layout.width, height=self.rows[1] - self.rows[0],
                count=count, dtype=dtype, crs=self.layout.crs, nodata=nodata,
                transform=self.layout.transform * Affine.translation(0, self.rows[0]),
                tiled=False, blockysize=1, compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")
            self._describe(name, dataset)
            self.datasets[name] = dataset
        return self

    def __exit__(self, *exc) -> None:
        for dataset in self.datasets.values():
            dataset.close()

    def discard(self) -> None:
        """Remove the unfinished files (nothing to show for the area)."""
        for name in self.names:
            self._raw(name).unlink(missing_ok=True)

    def _raw(self, name: str) -> Path:
        return self.folder / f".{name}.raw.tif"

    def _describe(self, name: str, dataset) -> None:
        if name == "prediction":
            from instageo.data.quicklook import hex_rgb

            dataset.write_colormap(1, {i: (*hex_rgb(c), 255) for i, c in enumerate(self.bundle["colours"])})
            dataset.update_tags(1, **{f"class_{i}": n for i, n in enumerate(self.bundle["classes"])})
            dataset.set_band_description(1, "class")
        else:
            for band in range(1, dataset.count + 1):
                dataset.set_band_description(band, self.colour.name if name == "rgb" else "confidence")
        dataset.update_tags(model=f"{self.bundle['backbone']} depth {self.bundle['depth']}")

    def write_blend(self, row: int, probabilities: np.ndarray, covered: np.ndarray, rgb: np.ndarray | None) -> None:
        """Rows of a Strip's blend, from ``row`` of the layout."""
        self.write(row, *classes_of(probabilities, covered), rgb)

    def write(self, row: int, classes: np.ndarray, confidence: np.ndarray, rgb: np.ndarray | None) -> None:
        """Rows from ``row`` of the layout; those outside ``self.rows`` are dropped."""
        from rasterio.windows import Window

        start, end = max(row, self.rows[0]), min(row + len(classes), self.rows[1])
        if end <= start:
            return
        part = slice(start - row, end - row)
        classes, confidence = classes[part], confidence[part]
        rgb = rgb[:, part] if rgb is not None else None
        if self.outline is not None:  # outside the GeoJSON area: nodata
            from affine import Affine
            from rasterio.features import geometry_mask

            transform = self.layout.transform * Affine.translation(0, start)
            outside = geometry_mask([self.outline], (len(classes), self.layout.width), transform)
            classes[outside], confidence[outside] = NODATA_CLASS, np.nan
            if rgb is not None:
                rgb[:, outside] = 0
        window = Window(0, start - self.rows[0], self.layout.width, len(classes))
        self.datasets["prediction"].write(classes, 1, window=window)
        self.datasets["confidence"].write(confidence, 1, window=window)
        if "rgb" in self.datasets:
            self.datasets["rgb"].write(rgb, window=window)
        known = classes[classes != NODATA_CLASS]
        self.class_pixels += np.bincount(known.ravel(), minlength=len(self.class_pixels))[:len(self.class_pixels)]

    def finish(self, overviews: bool = True) -> dict[str, str]:
        """COGs (DEFLATE, 256 px tiles, internal overviews unless ``overviews`` is False: mode
        for classes, average otherwise), the outputs side by side (GDAL works outside the GIL)."""
        with ThreadPoolExecutor(len(self.names)) as pool:
            return dict(zip(self.names, pool.map(functools.partial(self._to_cog, overviews=overviews), self.names)))

    def _to_cog(self, name: str, overviews: bool = True) -> str:
        import rasterio
        from rasterio.shutil import copy as copy_dataset

        raw = self._raw(name)
        resampling = "mode" if name == "prediction" else "average"
        height = self.rows[1] - self.rows[0]
        levels = [f for f in (2, 4, 8, 16, 32, 64, 128) if min(self.layout.width, height) // f >= 16] if overviews else []
        if levels:
            with rasterio.open(raw, "r+") as dataset:
                dataset.build_overviews(levels, getattr(rasterio.enums.Resampling, resampling))
        target = self.folder / f"{name}.tif"
        copy_dataset(raw, target, driver="COG", compress="DEFLATE", blocksize=256,
                     overview_resampling=resampling, overviews="AUTO" if overviews else "NONE", bigtiff="IF_SAFER")
        with rasterio.open(target) as written:  # GDAL does not raise every failed write: read back the end
            from rasterio.windows import Window

            written.read(window=Window(written.width - 1, written.height - 1, 1, 1))
        raw.unlink()
        return target.name

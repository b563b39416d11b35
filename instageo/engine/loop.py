"""The loop every prediction runs: tiles are read (ahead on threads, or small tiles from local
files between the model's batches), run through a head (an ONNX model) in batches, blended
with a smooth window into a strip one tile row high, and every finished row goes to a
writer, so an area of any height streams through in the memory of one tile row. ``Strip``
is the blend; what the head and the writer must do is engine/protocols.py.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from instageo.data.chip_build import ChipJob, read_row_stacks, reader_for, reads_remote
from instageo.data.grid import ChipGrid
from instageo.engine import Cancelled, runtime
from instageo.engine.protocols import Head, Writer
from instageo.engine.tiling import Layout

# units (tiles, or runs of small tiles) read at once. Remote files: 8 (a read mostly waits on
# the network; each unit's own reads overlap too): the demo shapes' reads at 50 ms took 1.8 s
# with 4 and 1.2 s with 8. Local files: decoding is CPU the model wants, and on 2 cores one
# thread kept ahead of an int8 student while 4 made the model itself 25% slower (end to end /
# model only 0.67 vs 0.71, bench/profile_predict.py): one thread per 2 cores (read_threads)
REMOTE_READ_THREADS = 8
# GDAL's cache of decoded blocks while predicting: tiles come row by row, so only the blocks of
# the last tile row are read again. 256 MiB (the chips stage's) made peak memory grow with the
# area (+25% from 513 to 1026 px squares); 32 MiB: +6%, the same speed (bench/predict.py)
BLOCK_CACHE_BYTES = 32 << 20
# tiles up to RUN_TILES_UP_TO px are read in runs of up to RUN_TILES along a tile row, each
# asset once for the whole run (data/reader.py, RowReads): the demo shapes' 484 tiles in 0.10
# s against 0.66-1.03 s one by one. Bigger tiles are read one by one: the EO shapes' 36 tiles
# of 224 px took 0.48 s in runs against 0.37 s (bench/RESULTS.md, 2026-12-08). RUN_TILES
# bounds the memory of a run over a wide area
RUN_TILES, RUN_TILES_UP_TO = 32, 64
# tiles read ahead hold at most this many bytes (their stacks and model inputs) beyond the
# `depth` the loop asks for: with runs, one unit per thread is up to RUN_TILES tiles (the
# demo's 8 runs over HTTP: 42 MiB; 64 px tiles of 12 steps x 6 bands: 2.4 MB each)
READ_AHEAD_BYTES = 256 << 20


def predict_rows(jobs: list[ChipJob], head: Head, batch_size: int, writer: Writer, track,
                 cancel=None) -> None:
    """Read, predict and blend row-major tiles, writing every finished row ``writer`` holds.
    A batch is the readable tiles among jobs[k * batch_size:(k + 1) * batch_size]: a tile's
    probabilities then depend only on its own batch (int8's quantisation scale is the whole
    batch's), so blocks that start on a batch boundary give the single process's bytes.
    ``cancel`` (a threading.Event), once set, stops it before the next tile with Cancelled."""
    layout = writer.layout
    strip = Strip(layout, head.channels, head.weight.shape[0], rgb=head.colour is not None,
                  top=layout.offset(jobs[0].grid)[0] if jobs else 0)

    def finish_rows_above(row: int) -> None:  # tiles arrive in rows: rows above `row` are final
        while row > strip.top and strip.top < writer.rows[1]:
            writer.write_blend(strip.top, *strip.take(min(row - strip.top, strip.size)))

    def place(batch: list) -> None:
        for grid, probabilities, weight, rgb in head.predict(batch) if batch else []:
            finish_rows_above(layout.offset(grid)[0])
            strip.add(grid, probabilities, weight, rgb)

    threads = read_threads(jobs)
    with ThreadPoolExecutor(max(threads, 1)) as pool:
        batch: list = []
        stacks = read_ahead(pool, jobs, head.prepare, 2 * batch_size + threads, threads)
        for index, (job, tile) in enumerate(track(stacks, total=len(jobs), description="tiles")):
            if cancel is not None and cancel.is_set():
                raise Cancelled()
            if tile is not None:
                batch.append((job.grid, *tile))
            if (index + 1) % batch_size == 0:
                place(batch)
                batch = []
        place(batch)
        finish_rows_above(layout.height)


def read_threads(jobs: list[ChipJob]) -> int:
    """Units of reading at once: REMOTE_READ_THREADS from a remote store; from local files every
    core when a GPU runs the model, else one thread per two cores, or none (read in the
    model's thread, between its batches) for tiles up to RUN_TILES_UP_TO px: their model calls
    are too small to share the cores, and a reading thread beside them made ONNX Runtime 2x
    slower (0.46 against 0.26 s of the demo shapes' 484 tiles; bench/RESULTS.md)."""
    if jobs and reads_remote(jobs[0]):
        return REMOTE_READ_THREADS
    cores = os.cpu_count() or 1
    if runtime.gpu_present():
        return cores
    return 0 if jobs and jobs[0].grid.size <= RUN_TILES_UP_TO else max(1, cores // 2)


def read_ahead(pool: ThreadPoolExecutor, jobs: list[ChipJob], prepare, depth: int, threads: int = 1):
    """(job, prepare(job, stack)) in order. Units of reading (one tile, or a run of small tiles
    along a row: tile_runs) go to the ``threads``, at most about ``depth`` tiles ahead of the
    consumer (a plain pool.map would read the whole area into memory if reading outpaced the
    model) and one unit ahead for each thread at least, within READ_AHEAD_BYTES; with no
    threads, each unit is read when the consumer reaches it."""
    pending: deque = deque()
    waiting = 0  # tiles submitted and not yet handed over
    tile_bytes = 8 * len(jobs[0].steps) * len(jobs[0].bands) * jobs[0].grid.size ** 2 if jobs else 1
    most = max(depth, READ_AHEAD_BYTES // tile_bytes)

    def read(run: list[ChipJob]) -> list:
        stacks = read_row_stacks(run, reader_for(run[0], BLOCK_CACHE_BYTES))
        return [prepare(job, stack) for job, stack in zip(run, stacks)]

    def oldest():
        nonlocal waiting
        run, future = pending.popleft()
        waiting -= len(run)
        return zip(run, future.result())

    if threads == 0:  # in the caller's thread, a unit at a time
        for run in tile_runs(jobs):
            yield from zip(run, read(run))
        return
    for run in tile_runs(jobs):
        pending.append((run, pool.submit(read, run)))
        waiting += len(run)
        while pending and ((waiting >= depth and len(pending) > threads) or waiting > most):
            yield from oldest()
    while pending:
        yield from oldest()


def tile_runs(jobs: list[ChipJob]) -> list[list[ChipJob]]:
    """Row-major tiles as units of reading: runs of up to RUN_TILES neighbours along a tile
    row that share their acquisitions (read_row_stacks) for tiles up to RUN_TILES_UP_TO px,
    else one tile each."""
    if not jobs or jobs[0].grid.size > RUN_TILES_UP_TO:
        return [[job] for job in jobs]
    runs: list[list[ChipJob]] = []
    for job in jobs:
        run = runs[-1] if runs else None
        if run and len(run) < RUN_TILES and run[-1].grid.transform[5] == job.grid.transform[5] \
                and _read_alike(run[0], job):
            run.append(job)
        else:
            runs.append([job])
    return runs


def _read_alike(first: ChipJob, other: ChipJob) -> bool:
    """Whether two tiles pick their acquisitions from the same candidates by the same rules
    (a prediction's tiles do: their steps are one list)."""
    def rules(job: ChipJob) -> tuple:
        return (job.grid.crs, job.grid.size, job.bands, job.mask_classes, job.strategy, job.max_fraction,
                job.base_dir, job.signing, job.auth)

    return (first.steps is other.steps or first.steps == other.steps) and rules(first) == rules(other)


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



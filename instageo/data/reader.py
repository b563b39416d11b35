"""Read catalogue assets onto chip grids: windowed, warped, scaled, with nodata as NaN.

Everything is imported at module level on purpose: chip jobs run on many threads at once,
and rasterio's extension modules fail when first imported by several threads together.

GDAL reads only the COG blocks a chip touches (WarpedVRT onto the chip grid), with settings
tuned for remote COGs. Hrefs are prepared at read time: relative ones resolved against the
search stage's folder, Planetary Computer ones signed (in memory only), NASA Earthdata ones
read with the user's token (EARTHDATA_TOKEN) or ~/.netrc. Nothing signed is ever written.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from instageo.data.grid import ChipGrid
from instageo.recipe.presets import BandAsset
from instageo.errors import DataSourceError

# GDAL configuration for reading COGs over HTTP (see GDAL's "Configuration options").
GDAL_OPTIONS: dict[str, object] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # one request for adjacent blocks
    "GDAL_HTTP_MULTIPLEX": "YES",  # HTTP/2 multiplexing where the server offers it
    "GDAL_HTTP_VERSION": "2",
    "VSI_CACHE": "FALSE",
    "VSI_CACHE_SIZE": str(64 << 20),
    "GDAL_CACHEMAX": 256 << 20,  # bytes of decoded-block cache (rasterio passes an int as bytes)
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.jp2,.JP2",
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    # the process-wide cache of downloaded ranges, shared by every handle on the same file:
    # neighbouring chips reuse the COG blocks they share instead of fetching them again
    "CPL_VSIL_CURL_CACHE_SIZE": str(256 << 20),
}
OPEN_DATASETS_PER_THREAD = 128
# threads that read remote files (each file always on the same one), on top of the callers'
# own: a read over a network mostly waits, so there are many. 64 against 16 and 32: 137 vs
# 298 and 156 ms a tile at 50 ms latency (fewer files share a thread). 0: no reads ahead.
REMOTE_READ_THREADS = 64
# ...but only from a store slow to answer: opening a remote COG takes two round trips (2.5 ms
# on loopback, 13 ms at 5 ms latency, 45 ms at 20 ms). Where it answers at once, reads sent
# ahead only added threads: the chips stage at 0 ms ran 9.5 chips/s against 15.3 without
READ_AHEAD_FROM_OPEN_SECONDS = 0.008
# the quickest first open of a remote file (later opens of a file, on other threads, are
# answered from GDAL's cache and say nothing of the store)
_opened: set[str] = set()
_fastest_first_open: float | None = None
_remote_threads: list[ThreadPoolExecutor] = []
_thread_of: dict[str, int] = {}  # remote file -> its reading thread (an index of _remote_threads)
_remote_threads_lock = threading.Lock()


def gdal_options(auth: str | None = None) -> dict[str, object]:
    options = dict(GDAL_OPTIONS)
    if auth == "earthdata":
        token = os.environ.get("EARTHDATA_TOKEN")
        if token:
            options["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {token}"
        elif (Path.home() / ".netrc").exists():
            options["GDAL_HTTP_NETRC"] = "YES"
    return options


def prepare_href(href: str, base_dir: Path, signing: str | None = None) -> str:
    if "://" not in href:
        return os.path.normpath(os.path.join(base_dir, href))  # no realpath: it costs syscalls
    if signing == "planetary_computer":
        import planetary_computer

        try:
            return planetary_computer.sign(href)
        except Exception as exc:  # the token service is a remote call
            raise DataSourceError(f"cannot sign {href.split('?')[0]} with Planetary Computer: {exc}") from None
    return href


class AssetReader:
    """Reads assets onto chip grids. Keeps recently used files open, one set per thread."""

    def __init__(self, base_dir: Path, signing: str | None = None, auth: str | None = None,
                 block_cache_bytes: int | None = None):
        self.base_dir = Path(base_dir)
        self.signing = signing
        self.options = gdal_options(auth)
        if block_cache_bytes is not None:
            self.options["GDAL_CACHEMAX"] = block_cache_bytes
        self._local = threading.local()

    def _dataset(self, href: str) -> Opened:
        if getattr(self._local, "env", None) is None:
            # GDAL options are per thread in rasterio; set them once for this thread's life
            # rather than entering an Env around every read
            self._local.env = rasterio.Env(**self.options)
            self._local.env.__enter__()
        cache: OrderedDict = getattr(self._local, "datasets", None) or OrderedDict()
        self._local.datasets = cache
        if href in cache:
            cache.move_to_end(href)
            return cache[href]
        prepared = prepare_href(href, self.base_dir, self.signing)  # signing is not the store's time
        started = time.perf_counter()
        dataset = rasterio.open(prepared)
        if is_remote(href) and href not in _opened:
            global _fastest_first_open
            _opened.add(href)
            took = time.perf_counter() - started
            _fastest_first_open = took if _fastest_first_open is None else min(_fastest_first_open, took)
        cache[href] = Opened.of(dataset)
        if len(cache) > OPEN_DATASETS_PER_THREAD:
            cache.popitem(last=False)[1].dataset.close()
        return cache[href]

    def read(self, asset: BandAsset, grid: ChipGrid, categorical: bool = False) -> np.ndarray:
        """The asset on the chip grid: float32 with NaN for nodata (reflectance scaled), or the
        raw values for categorical rasters (masks, labels) with their own fill outside."""
        values = self.read_wide(asset, grid, grid.size, categorical)  # same CRS and lattice: no resampling
        if values is not None:
            return values
        opened, nodata, fill = self._source(asset, categorical)
        resampling = Resampling.nearest if categorical else Resampling.bilinear
        with WarpedVRT(opened.dataset, crs=grid.crs, transform=grid.affine, width=grid.size,
                       height=grid.size, resampling=resampling, src_nodata=nodata,
                       nodata=fill if categorical else np.nan,
                       dtype=None if categorical else "float32") as vrt:
            return self._values(vrt.read(asset.band), asset, nodata, categorical)

    def read_wide(self, asset: BandAsset, grid: ChipGrid, width: int, categorical: bool = False) -> np.ndarray | None:
        """As ``read``, but ``width`` columns from the grid's left edge (its rows), when the
        file lies on the grid's lattice; None when it does not (a warped read is per chip)."""
        opened, nodata, fill = self._source(asset, categorical)
        window = _aligned_window(opened, grid)
        if window is None:
            return None
        wide = Window(window.col_off, window.row_off, width, grid.size)
        return self._values(_read_aligned(opened, asset.band, wide, fill), asset, nodata, categorical)

    def _source(self, asset: BandAsset, categorical: bool) -> tuple[Opened, object, object]:
        """The asset's open file, its nodata and the fill of pixels outside it."""
        opened = self._dataset(asset.href)
        if opened.crs is None:  # GDAL would warp it as if it were in the chip's CRS
            from rasterio.errors import RasterioIOError

            raise RasterioIOError(f"{asset.href}: the raster has no CRS")
        nodata = asset.nodata if asset.nodata is not None else opened.nodatavals[asset.band - 1]
        return opened, nodata, (nodata if nodata is not None else 0) if categorical else nodata

    @staticmethod
    def _values(data: np.ndarray, asset: BandAsset, nodata, categorical: bool) -> np.ndarray:
        """Raw pixels as the reader returns them: categorical as they are, else float32 with
        NaN for nodata, scaled."""
        if categorical:
            return data
        data = data.astype(np.float32, copy=False)
        if nodata is not None:
            data[data == nodata if not np.isnan(nodata) else np.isnan(data)] = np.nan
        return data * np.float32(asset.scale) + np.float32(asset.offset)

    def close(self) -> None:
        for opened in getattr(self._local, "datasets", {}).values():
            opened.dataset.close()
        self._local.datasets = OrderedDict()


@dataclass(frozen=True)
class Opened:
    """An open dataset and what every read asks of it, asked once (rasterio builds the CRS
    string and the transform anew on every access: 40 us of each 32 px read)."""

    dataset: object
    crs: str | None
    transform: Affine
    nodatavals: tuple
    dtypes: tuple
    width: int
    height: int

    @classmethod
    def of(cls, dataset) -> Opened:
        return cls(dataset, dataset.crs.to_string() if dataset.crs else None, dataset.transform,
                   dataset.nodatavals, dataset.dtypes, dataset.width, dataset.height)


def _aligned_window(opened: Opened, grid: ChipGrid):
    """The chip as a window of the dataset when both share CRS and pixel lattice, else None."""
    if opened.crs is None or opened.crs != grid.crs:
        return None
    a, _, c, _, e, f = grid.transform
    t = opened.transform
    if t.b != 0 or t.d != 0 or abs(t.a - a) > 1e-9 * abs(a) or abs(t.e - e) > 1e-9 * abs(e):
        return None
    column, row = (c - t.c) / t.a, (f - t.f) / t.e
    if abs(column - round(column)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return Window(round(column), round(row), grid.size, grid.size)


def _read_aligned(opened: Opened, band: int, window: Window, fill) -> np.ndarray:
    """``window`` of the dataset, where part of it may lie past the raster's edge: the part
    on the raster is read as is, the rest is ``fill`` (NaN when None). Cheaper than a
    boundless read, which goes through a VRT."""
    src = opened.dataset
    rows = max(window.row_off, 0), min(window.row_off + window.height, opened.height)
    columns = max(window.col_off, 0), min(window.col_off + window.width, opened.width)
    if rows[0] == window.row_off and columns[0] == window.col_off and rows[1] - rows[0] == window.height \
            and columns[1] - columns[0] == window.width:
        return src.read(band, window=window)  # all inside
    dtype = opened.dtypes[band - 1] if fill is not None else np.float32
    data = np.full((window.height, window.width), fill if fill is not None else np.nan, dtype)
    if rows[0] < rows[1] and columns[0] < columns[1]:
        data[rows[0] - window.row_off:rows[1] - window.row_off, columns[0] - window.col_off:columns[1] - window.col_off] = \
            src.read(band, window=Window(columns[0], rows[0], columns[1] - columns[0], rows[1] - rows[0]))
    return data


def is_remote(href: str) -> bool:
    return "://" in href or href.startswith("/vsi")


def reading_ahead_pays() -> bool:
    """Whether remote reads wait on the network long enough to send them ahead: the quickest
    first open of a file took longer than READ_AHEAD_FROM_OPEN_SECONDS (yes until one is timed)."""
    return REMOTE_READ_THREADS > 0 and (_fastest_first_open is None
                                        or _fastest_first_open > READ_AHEAD_FROM_OPEN_SECONDS)


def _thread_for(href: str) -> ThreadPoolExecutor:
    """The one reading thread of a remote file: every read of a file goes through one
    thread, so one open handle serves them and its cached blocks are reused; threads that
    each opened the file fetched the same blocks at once (3.5x the requests). Files take the
    threads in turn as they are first read: by a hash of the href, 21 files shared threads
    and their opens waited on each other (the demo shapes' reads at 50 ms, 4 and 8 runs in
    flight: 2.1 -> 1.8 s and 1.9 -> 1.2 s)."""
    with _remote_threads_lock:
        index = _thread_of.setdefault(href, len(_thread_of) % max(REMOTE_READ_THREADS, 1))
        while len(_remote_threads) <= index:
            _remote_threads.append(ThreadPoolExecutor(1, thread_name_prefix=f"instageo-read-{len(_remote_threads)}"))
    return _remote_threads[index]


class RunPixels:
    """Values across a run of tiles along a row (RowReads): one wide array (..., size, W) whose
    tile i is columns lefts[i]:lefts[i] + size, or (off the tiles' lattice) each tile's own."""

    def __init__(self, lefts: np.ndarray, size: int, wide: np.ndarray | None = None,
                 tiles: list[np.ndarray] | None = None):
        self.lefts, self.size, self.wide, self.tiles = lefts, size, wide, tiles

    def tile(self, index: int) -> np.ndarray:
        if self.wide is None:
            return self.tiles[index]
        left = self.lefts[index]
        return self.wide[..., left:left + self.size]

    def counts(self) -> np.ndarray:
        """The True pixels of each tile (of a boolean (size, W) or (size, size) each)."""
        if self.wide is None:
            return np.array([np.count_nonzero(tile) for tile in self.tiles], np.int64)
        columns = np.concatenate([[0], np.cumsum(self.wide.sum(axis=0, dtype=np.int64))])
        return columns[self.lefts + self.size] - columns[self.lefts]

    def apply(self, function, *others: RunPixels) -> RunPixels:
        """function(self's values, others' values), wide where all are wide, else per tile."""
        parts = (self, *others)
        if all(part.wide is not None for part in parts):
            return RunPixels(self.lefts, self.size, wide=function(*(part.wide for part in parts)))
        return RunPixels(self.lefts, self.size,
                         tiles=[function(*(part.tile(i) for part in parts)) for i in range(len(self.lefts))])

    @staticmethod
    def stack(parts: list[RunPixels]) -> RunPixels:
        return parts[0].apply(lambda *values: np.stack(values), *parts[1:])


class RowReads:
    """The reads of a run of tiles along one tile row (a chip alone is a run of one): each asset
    read once across the run, from the first tile's left edge to the last's right edge, and
    each tile's window a slice of that; at prediction's 32 px tiles a read's own cost was most
    of a tile's. A file off the tiles' lattice (another CRS or pixel grid) is read tile by
    tile, warped. ``start`` sends a remote read ahead to its file's reading thread, so that a
    run's bands and time steps wait on the network together rather than one round trip after
    another; ``read`` returns it (local files are read in place: there is no wait to hide)."""

    def __init__(self, reader: AssetReader, grids: list[ChipGrid]):
        self.reader, self.grids, self.first = reader, grids, grids[0]
        a, left = self.first.transform[0], self.first.transform[2]
        self.lefts = np.array([round((grid.transform[2] - left) / a) for grid in grids], np.int64)
        if (np.diff(self.lefts) < 0).any():
            raise ValueError("a run's tiles must go from west to east")
        self.width = int(self.lefts[-1]) + self.first.size
        self.results: dict[tuple[BandAsset, bool], Future | RunPixels] = {}

    def start(self, asset: BandAsset, categorical: bool = False) -> None:
        key = (asset, categorical)
        if key not in self.results and is_remote(asset.href) and reading_ahead_pays():
            self.results[key] = _thread_for(asset.href).submit(self._read, asset, categorical)

    def read(self, asset: BandAsset, categorical: bool = False) -> RunPixels:
        """The asset across the run (read-only: the run's tiles share it)."""
        key = (asset, categorical)
        self.start(asset, categorical)  # a remote file is read on its own thread, always
        if key not in self.results:
            self.results[key] = self._read(asset, categorical)
        result = self.results[key]
        return result.result() if isinstance(result, Future) else result

    def _read(self, asset: BandAsset, categorical: bool) -> RunPixels:
        size = self.first.size
        wide = self.reader.read_wide(asset, self.first, self.width, categorical)
        if wide is not None:
            wide.flags.writeable = False
            return RunPixels(self.lefts, size, wide=wide)
        # (on the file's own reading thread when sent ahead: every read of a file goes through it)
        tiles = [self.reader.read(asset, grid, categorical) for grid in self.grids]
        return RunPixels(self.lefts, size, tiles=tiles)

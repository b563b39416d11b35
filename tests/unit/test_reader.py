"""The reader's shared row spans (prediction's tiles take their columns of one wide read)
against rasterio's own boundless windowed read of the same real files: HLS L30 reflectance
(nodata -9999) and an HLS Fmask (uint8, categorical), tiles reaching past every edge."""

import threading
import time

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from instageo.data.grid import ChipGrid
from instageo.data.reader import AssetReader, SharedReads
from instageo.recipe.presets import BandAsset
from tests.conftest import SHARED_DATA

HLS = SHARED_DATA / "hls" / "hls_l30_texas_224.tif"
FMASK = SHARED_DATA / "hls" / "hls_s30_fmask_yemen.tif"
SIZE, STRIDE = 32, 24


def row_of_tiles(path, row: int) -> list[tuple[int, ChipGrid]]:
    """Tiles on the file's own lattice along pixel row ``row``, from 8 px left of the raster
    to past its right edge."""
    with rasterio.open(path) as src:
        t, crs, width = src.transform, src.crs.to_string(), src.width
    return [(column, ChipGrid(crs, (t.a, 0.0, t.c + column * t.a, 0.0, t.e, t.f + row * t.e), SIZE))
            for column in range(-8, width + 8, STRIDE)]


def rasterio_read(path, band: int, column: int, row: int, fill) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band, window=Window(column, row, SIZE, SIZE), boundless=True, fill_value=fill)


@pytest.mark.parametrize("row", [0, 100, 200])  # 200: the tiles' lower 8 rows lie below the raster
def test_row_spans_give_rasterios_windowed_reflectance(tmp_path, row):
    asset = BandAsset(str(HLS), scale=0.0001, band=3)
    spans, plain = AssetReader(tmp_path, row_span=64), AssetReader(tmp_path)
    for column, grid in row_of_tiles(HLS, row):
        expected = rasterio_read(HLS, 3, column, row, -9999).astype(np.float32)
        expected[expected == -9999] = np.nan
        expected = expected * np.float32(0.0001)
        got = spans.read(asset, grid)
        assert np.array_equal(got, expected, equal_nan=True), column
        assert np.array_equal(plain.read(asset, grid), expected, equal_nan=True), column
        assert not got.flags.writeable  # shared with the row's other tiles
    assert np.isnan(got).any()  # the last tile reached past the raster: NaN there, as rasterio fills it


def test_row_spans_give_rasterios_windowed_mask_classes(tmp_path):
    asset = BandAsset(str(FMASK))
    reader = AssetReader(tmp_path, row_span=64)
    for column, grid in row_of_tiles(FMASK, 150):
        expected = rasterio_read(FMASK, 1, column, 150, 255)
        got = reader.read(asset, grid, categorical=True)
        assert got.dtype == np.uint8 and np.array_equal(got, expected), column


def test_shared_reads_compute_a_key_once_for_every_thread_and_stay_in_budget():
    shared, calls = SharedReads(budget=3 * 800), []

    def compute(key):
        calls.append(key)
        time.sleep(0.05)  # the others ask while it is in flight
        return np.zeros(100)  # 800 bytes

    results = []
    threads = [threading.Thread(target=lambda: results.append(shared.get("a", lambda: compute("a")))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["a"] and len(results) == 4 and all(r is results[0] for r in results)
    for key in "bcde":
        shared.get(key, lambda key=key: compute(key))
    assert shared.held <= 3 * 800 and list(shared.entries) == ["c", "d", "e"]
    with pytest.raises(ZeroDivisionError):
        shared.get("f", lambda: 1 / 0)
    assert "f" not in shared.entries  # a failure is not kept: the next asker tries again

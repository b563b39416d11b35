"""The reader's runs of tiles (prediction's small tiles take their columns of one wide read
per asset) against rasterio's own boundless windowed read of the same real files: HLS L30
reflectance (nodata -9999) and an HLS Fmask (uint8, categorical), tiles reaching past every
edge; and a run off the file's lattice, read tile by tile through rasterio's WarpedVRT."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.windows import Window

from instageo.data.grid import ChipGrid
from instageo.data.reader import AssetReader, RowReads
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
def test_a_run_of_tiles_gives_rasterios_windowed_reflectance(tmp_path, row):
    asset = BandAsset(str(HLS), scale=0.0001, band=3)
    tiles = row_of_tiles(HLS, row)
    run = RowReads(AssetReader(tmp_path), [grid for _, grid in tiles]).read(asset)
    assert run.wide is not None  # on the file's lattice: one read for the run
    for index, (column, grid) in enumerate(tiles):
        expected = rasterio_read(HLS, 3, column, row, -9999).astype(np.float32)
        expected[expected == -9999] = np.nan
        expected = expected * np.float32(0.0001)
        got = run.tile(index)
        assert np.array_equal(got, expected, equal_nan=True), column
        assert np.array_equal(AssetReader(tmp_path).read(asset, grid), expected, equal_nan=True), column
        assert not got.flags.writeable  # shared with the run's other tiles
    assert np.isnan(got).any()  # the last tile reached past the raster: NaN there, as rasterio fills it


def test_a_run_of_tiles_gives_rasterios_windowed_mask_classes(tmp_path):
    tiles = row_of_tiles(FMASK, 150)
    run = RowReads(AssetReader(tmp_path), [grid for _, grid in tiles]).read(BandAsset(str(FMASK)), categorical=True)
    for index, (column, _) in enumerate(tiles):
        got = run.tile(index)
        assert got.dtype == np.uint8 and np.array_equal(got, rasterio_read(FMASK, 1, column, 150, 255)), column


def test_a_run_off_the_files_lattice_is_read_tile_by_tile_warped(tmp_path):
    with rasterio.open(HLS) as src:
        t, crs = src.transform, src.crs.to_string()
    half = t.a / 2  # half a pixel east: no window of the file is any tile
    grids = [ChipGrid(crs, (t.a, 0.0, t.c + half + column * t.a, 0.0, t.e, t.f + 40 * t.e), SIZE)
             for column in range(0, 120, STRIDE)]
    run = RowReads(AssetReader(tmp_path), grids).read(BandAsset(str(HLS), band=2))
    assert run.wide is None and len(run.tiles) == len(grids)
    with rasterio.open(HLS) as src:
        for index, grid in enumerate(grids):
            with WarpedVRT(src, crs=crs, transform=grid.affine, width=SIZE, height=SIZE,
                           resampling=Resampling.bilinear, src_nodata=-9999, nodata=np.nan, dtype="float32") as vrt:
                assert np.array_equal(run.tile(index), vrt.read(2), equal_nan=True), index

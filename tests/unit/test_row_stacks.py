"""A run of tiles along a row (read_row_stacks, prediction's small tiles) picks each tile's
acquisitions as a plain reading of that tile alone would: written here with rasterio's
boundless windowed reads and numpy, tile by tile, as the oracle. Real pixels: HLS L30
reflectance (Texas) and the cloud pattern of a real HLS Fmask (Yemen), laid on the Texas
lattice in tmp_path (as it is with a strip of fill, mirrored, upside down), so that
neighbouring tiles choose differently."""

import numpy as np
import pytest
import rasterio
from rasterio.windows import Window

from instageo.data.chip_build import Candidate, ChipJob, read_row_stacks, read_stack
from instageo.data.grid import ChipGrid
from instageo.data.masks import decode
from instageo.data.reader import AssetReader
from tests.conftest import SHARED_DATA

HLS = SHARED_DATA / "hls" / "hls_l30_texas_224.tif"
FMASK = SHARED_DATA / "hls" / "hls_s30_fmask_yemen.tif"
SIZE, STRIDE, BANDS, CLASSES = 32, 24, ("blue", "green", "red"), ["cloud", "adjacent", "cloud_shadow"]


def masks_on_the_hls_lattice(folder) -> list[str]:
    """Three masks with the real Fmask's clouds, in the HLS file's CRS and pixel grid."""
    with rasterio.open(HLS) as hls, rasterio.open(FMASK) as fmask:
        profile = dict(driver="GTiff", width=hls.width, height=hls.height, count=1, dtype="uint8",
                       crs=hls.crs, transform=hls.transform, nodata=255)
        values = fmask.read(1)[:hls.height, :hls.width]
    first = values.copy()
    first[:, :12] = 255  # a strip without imagery: tiles there have nothing from this one
    paths = []
    for name, array in (("a.tif", first), ("b.tif", values[:, ::-1]), ("c.tif", values[::-1])):
        with rasterio.open(folder / name, "w", **profile) as out:
            out.write(array, 1)
        paths.append(str(folder / name))
    return paths


def candidate(name: str, mask: str) -> Candidate:
    bands = {band: {"href": str(HLS), "scale": 0.0001, "nodata": -9999.0, "band": i + 1}
             for i, band in enumerate(BANDS)}
    return Candidate(name, f"2024-06-0{1 + 'abc'.index(name)}", bands, {"href": mask}, "fmask")


def row_jobs(folder, row: int, max_fraction: float, strategy: str) -> list[ChipJob]:
    a, b, c = (candidate(name, mask) for name, mask in zip("abc", masks_on_the_hls_lattice(folder)))
    steps = [[a, b, c], [b, c, a]]
    with rasterio.open(HLS) as src:
        t, crs, width = src.transform, src.crs.to_string(), src.width
    return [ChipJob(f"tile{column}", "", 0.0, 0.0, "2024-06-03", None, None,
                    ChipGrid(crs, (t.a, 0.0, t.c + column * t.a, 0.0, t.e, t.f + row * t.e), SIZE), steps,
                    bands=list(BANDS), mask_classes=CLASSES, strategy=strategy, max_fraction=max_fraction,
                    buffer=0, ignore_index=-1, regression=False, base_dir=str(folder))
            for column in range(-8, width + 8 - SIZE // 2, STRIDE)]


def window(path: str, band: int, job: ChipJob, fill) -> np.ndarray:
    with rasterio.open(path) as src:
        column, row = ~src.transform * (job.grid.transform[2], job.grid.transform[5])
        return src.read(band, window=Window(round(column), round(row), SIZE, SIZE), boundless=True, fill_value=fill)


def oracle(job: ChipJob):
    """The tile alone: each step's first candidate not yet taken whose masked-or-empty share
    is at most max_fraction, by its mask, then by its mask and bands together."""
    images, invalids, items = [], [], []
    for candidates in job.steps:
        least_empty, picked = 1.0, None
        for c in candidates:
            if c.id in items:
                continue
            masked, empty = decode(window(c.mask["href"], 1, job, 255), "fmask", CLASSES)
            if (masked | empty).mean() > job.max_fraction:
                least_empty = min(least_empty, empty.mean())
                continue
            bands = np.stack([window(c.bands[b]["href"], c.bands[b]["band"], job, -9999).astype(np.float32)
                              for b in BANDS])
            bands[bands == -9999] = np.nan
            bands = bands * np.float32(0.0001)
            empty |= np.isnan(bands).any(axis=0)
            least_empty = min(least_empty, empty.mean())
            if (masked | empty).mean() <= job.max_fraction:
                picked = (c, bands, masked | empty)
                break
        if picked is None:
            return "no_data" if least_empty > job.max_fraction else "cloudy"
        items.append(picked[0].id)
        images.append(picked[1])
        invalids.append(picked[2])
    invalid = np.stack(invalids)
    if job.strategy == "any":
        invalid = np.broadcast_to(invalid.any(axis=0), invalid.shape)
    image = np.stack(images)
    image[np.broadcast_to(invalid[:, None], image.shape)] = np.nan
    return items, image, invalid


@pytest.mark.parametrize("row, max_fraction, strategy", [(120, 0.01, "each"), (150, 0.02, "any"), (190, 0.05, "any")])
def test_a_run_picks_each_tiles_acquisitions_as_the_tile_alone(tmp_path, row, max_fraction, strategy):
    jobs = row_jobs(tmp_path, row, max_fraction, strategy)
    reader = AssetReader(tmp_path)
    stacks = read_row_stacks(jobs, reader)
    assert len(stacks) == len(jobs)
    for job, stack in zip(jobs, stacks):
        expected = oracle(job)
        if isinstance(expected, str):
            assert stack == expected, job.chip_id
            continue
        items, image, invalid = expected
        assert stack.items == items, job.chip_id
        assert np.array_equal(stack.image, image, equal_nan=True), job.chip_id
        assert np.array_equal(stack.invalid, invalid), job.chip_id
        alone = read_stack(job, reader)
        assert alone.items == items and np.array_equal(alone.image, stack.image, equal_nan=True)
    results = [s if isinstance(s, str) else "".join(s.items) for s in stacks]
    assert len(set(results) - {"no_data", "cloudy"}) >= 2, results  # the tiles of one run chose differently


def test_a_mask_off_the_tiles_lattice_is_warped_tile_by_tile_in_a_run(tmp_path):
    """A 60 m mask for 30 m bands (as Sentinel-2's 20 m SCL for its 10 m bands): the mask is
    warped onto each tile, the bands are still read once for the run; every tile gets the
    stack it gets read alone."""
    jobs = row_jobs(tmp_path, 120, 0.01, "each")
    with rasterio.open(tmp_path / "a.tif") as src:
        coarse = src.read(1)[::2, ::2]
        profile = dict(src.profile, width=coarse.shape[1], height=coarse.shape[0],
                       transform=src.transform * src.transform.scale(2))
    with rasterio.open(tmp_path / "a60.tif", "w", **profile) as out:
        out.write(coarse, 1)
    steps = [[Candidate(c.id, c.date, c.bands, {"href": str(tmp_path / "a60.tif")} if c.id == "a" else c.mask, "fmask")
              for c in step] for step in jobs[0].steps]
    jobs = [ChipJob(**{**vars(job), "steps": steps}) for job in jobs]
    reader = AssetReader(tmp_path)
    stacks = read_row_stacks(jobs, reader)
    for job, stack in zip(jobs, stacks):
        alone = read_stack(job, reader)
        if isinstance(alone, str):
            assert stack == alone, job.chip_id
        else:
            assert stack.items == alone.items and np.array_equal(stack.image, alone.image, equal_nan=True), job.chip_id
            assert np.array_equal(stack.invalid, alone.invalid), job.chip_id
    assert any(not isinstance(s, str) and "a" in s.items for s in stacks)


def test_a_broken_block_under_one_tile_costs_that_tile_alone_its_acquisition(tmp_path):
    """A file whose one compressed block (under the run's last tile) is garbage: the run's read
    across it fails, and each tile then reads its own window, as it would alone: the others
    keep the acquisition, the last one passes it over for the next."""
    with rasterio.open(HLS) as src:
        profile = dict(driver="GTiff", width=192, height=64, count=3, dtype="float32", crs=src.crs,
                       transform=src.transform, nodata=-9999.0, tiled=True, blockxsize=32, blockysize=32,
                       compress="DEFLATE", interleave="band")
        pixels = src.read([1, 2, 3], window=Window(0, 0, 192, 64))
    broken = tmp_path / "broken.tif"
    with rasterio.open(broken, "w", **profile) as out:
        out.write(pixels)
    with rasterio.open(broken) as src:  # the block of band 1 at block row 0, block column 5
        offset = int(src.get_tag_item("BLOCK_OFFSET_5_0", "TIFF", bidx=1))
    with open(broken, "r+b") as file:
        file.seek(offset + 8)
        file.write(b"\xff" * 64)

    def acquisition(name: str, href: str) -> Candidate:
        bands = {band: {"href": href, "scale": 0.0001, "nodata": -9999.0, "band": i + 1} for i, band in enumerate(BANDS)}
        return Candidate(name, "2024-06-01", bands, None, None)

    steps = [[acquisition("a", str(broken)), acquisition("b", str(HLS))]]
    with rasterio.open(HLS) as src:
        t, crs = src.transform, src.crs.to_string()
    jobs = [ChipJob(f"tile{column}", "", 0.0, 0.0, "2024-06-01", None, None,
                    ChipGrid(crs, (t.a, 0.0, t.c + column * t.a, 0.0, t.e, t.f), SIZE), steps, bands=list(BANDS),
                    mask_classes=CLASSES, strategy="each", max_fraction=0.5, buffer=0, ignore_index=-1,
                    regression=False, base_dir=str(tmp_path)) for column in range(0, 192, SIZE)]
    reader = AssetReader(tmp_path)
    with pytest.raises(rasterio.errors.RasterioIOError):  # the block is broken indeed
        with rasterio.open(broken) as src:
            src.read(1, window=Window(160, 0, 32, 32))
    stacks = read_row_stacks(jobs, reader)
    assert [s.items for s in stacks] == [["a"]] * 5 + [["b"]]
    assert stacks[-1].unreadable == ["a"] and stacks[0].unreadable == []
    for job, stack in zip(jobs, stacks):
        alone = read_stack(job, reader)
        assert alone.items == stack.items and np.array_equal(alone.image, stack.image, equal_nan=True)

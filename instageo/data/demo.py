"""The offline demo scene: a small multi-temporal HLS-like scene, deterministic from a seed.

Land cover (water, vegetation, bare soil, built-up) is drawn from smooth random fields; each
acquisition gets plausible surface reflectance for six HLS bands with seasonal vegetation
greening and a lake that swells in the wet season, clouds with their shadows (recorded in an
Fmask band with HLS's bit layout), sensor noise and, on some dates, a swath edge of nodata.
Written as COGs (one per band, int16 reflectance x 10000, nodata -9999, like HLS) with a
local static STAC catalogue and a CSV of dated point observations whose labels are the ground
truth on their date.
"""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np

BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")
ASSET_KEYS = ("B02", "B03", "B04", "B05", "B06", "B07")  # HLS L30 names of those bands
CLASSES = ("other", "water", "vegetation")  # the labels written to the observations CSV
COLLECTION = "hls-demo"
CRS = "EPSG:32637"  # UTM 37N: northern Kenya, desert-locust country
ORIGIN = (600000.0, 159990.0)  # upper-left corner, metres: on the 30 m lattice, like HLS tiles
RESOLUTION = 30.0
NODATA = -9999
FIRST_DATE = dt.date(2023, 1, 3)
CADENCE_DAYS = 16

# Fmask bits (HLS v2 user guide): 0 cirrus, 1 cloud, 2 adjacent to cloud/shadow,
# 3 cloud shadow, 4 snow/ice, 5 water, 6-7 aerosol level.
CIRRUS, CLOUD, ADJACENT, SHADOW, WATER_BIT = 1, 2, 4, 8, 32
AEROSOL_LOW = 64
FMASK_FILL = 255

# Surface reflectance per band (blue, green, red, nir, swir16, swir22).
WATER = np.array([0.045, 0.055, 0.035, 0.020, 0.010, 0.006])
GREEN_VEGETATION = np.array([0.030, 0.065, 0.040, 0.380, 0.190, 0.090])
DRY_VEGETATION = np.array([0.060, 0.090, 0.120, 0.240, 0.300, 0.200])
BARE_SOIL = np.array([0.110, 0.150, 0.200, 0.260, 0.340, 0.290])
BUILT_UP = np.array([0.120, 0.130, 0.140, 0.170, 0.210, 0.200])
CLOUD_TOP = np.array([0.550, 0.540, 0.540, 0.560, 0.420, 0.300])
# Within-class brightness variation (canopy density, soil moisture, roof materials), a
# relative std at a ~2 px scale, the same on every date. At 0.08 every class was spectrally
# separable pixel by pixel: a nearest-class-mean baseline matched any trained model and the
# demo could not show what a model adds (bench/RESULTS.md, "The demo scene").
TEXTURE = 0.3
SENSOR_NOISE = 0.004  # reflectance std, independent per pixel, band and date


@dataclass(frozen=True)
class DemoScene:
    catalog: Path
    observations: Path
    dates: list[dt.date]


def smooth_field(rng: np.random.Generator, size: int, scale_px: float) -> np.ndarray:
    """Gaussian-filtered white noise (via FFT), normalised to zero mean and unit std."""
    noise = rng.standard_normal((size, size))
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    kernel = np.exp(-2 * (np.pi * scale_px) ** 2 * (fx**2 + fy**2))
    field = np.fft.irfft2(np.fft.rfft2(noise) * kernel, s=(size, size))
    return (field - field.mean()) / (field.std() + 1e-12)


def seasonality(date: dt.date) -> float:
    """0 at the height of the dry season, 1 at the height of the wet season (peak ~ mid-May)."""
    return 0.5 + 0.5 * np.sin(2 * np.pi * (date.timetuple().tm_yday - 45) / 365.0)


class _Landscape:
    def __init__(self, rng: np.random.Generator, size: int):
        yy, xx = np.mgrid[0:size, 0:size] / size
        # a meandering river plus a lake whose shore depends on the season
        river_centre = 0.5 + 0.12 * np.sin(2 * np.pi * (xx * 1.3 + rng.uniform()))
        self.river = np.abs(yy - river_centre) < 0.012 + 0.006 * smooth_field(rng, size, size / 20)
        cx, cy = rng.uniform(0.2, 0.8, size=2)
        self.lake_depth = 0.18 - np.hypot(xx - cx, yy - cy) + 0.03 * smooth_field(rng, size, size / 15)
        self.vegetation = smooth_field(rng, size, size / 12) > 0.15
        tx, ty = rng.uniform(0.1, 0.7, size=2)
        town = (np.abs(xx - tx - 0.1) < 0.1) & (np.abs(yy - ty - 0.08) < 0.08)
        streets = ((np.arange(size)[None, :] % 9 == 0) | (np.arange(size)[:, None] % 9 == 0))
        self.built = town & ~streets
        self.texture = TEXTURE * smooth_field(rng, size, 2.0)

    def classes(self, wet: float) -> np.ndarray:
        """Ground truth on a date: 0 other (soil, built-up), 1 water, 2 vegetation."""
        water = self.river | (self.lake_depth > 0.06 * (1 - wet))
        truth = np.zeros(self.river.shape, np.uint8)
        truth[self.vegetation & ~self.built] = 2
        truth[water] = 1
        return truth

    def reflectance(self, truth: np.ndarray, wet: float) -> np.ndarray:
        vegetation = wet * GREEN_VEGETATION + (1 - wet) * DRY_VEGETATION
        cover = np.where(self.built, 3, truth)  # 3: built-up (labelled "other")
        spectra = np.stack([BARE_SOIL, WATER, vegetation, BUILT_UP])
        bands = spectra[cover].transpose(2, 0, 1)
        return bands * (1 + self.texture)[None]


def _clouds(rng: np.random.Generator, size: int, cover: float) -> tuple[np.ndarray, np.ndarray]:
    """Cloud opacity in [0, 1] and a cloud-shadow mask (the clouds shifted down-sun)."""
    if cover <= 0:
        return np.zeros((size, size)), np.zeros((size, size), bool)
    field = smooth_field(rng, size, size / 14)
    threshold = np.quantile(field, 1 - cover)
    opacity = np.clip((field - threshold) / 0.5, 0, 1)
    dy, dx = (int(v) for v in rng.integers(4, 10, size=2))
    cast = np.zeros((size, size), bool)
    cast[dy:, dx:] = opacity[:-dy, :-dx] > 0.3
    return opacity, cast & (opacity < 0.05)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = mask.copy()
    for shift in range(1, radius + 1):
        out[shift:, :] |= mask[:-shift, :]
        out[:-shift, :] |= mask[shift:, :]
        out[:, shift:] |= mask[:, :-shift]
        out[:, :-shift] |= mask[:, shift:]
    return out


def render(seed: int, size: int, acquisitions: int, first_date: dt.date = FIRST_DATE):
    """Yield (date, reflectance (6, H, W) float32 with NaN nodata, fmask uint8, truth uint8)."""
    rng = np.random.default_rng(seed)
    land = _Landscape(rng, size)
    for index in range(acquisitions):
        date = first_date + dt.timedelta(days=CADENCE_DAYS * index)
        wet = float(seasonality(date))
        truth = land.classes(wet)
        surface = land.reflectance(truth, wet)
        cover = float(rng.choice([0.0, 0.05, 0.15, 0.35, 0.6], p=[0.3, 0.25, 0.2, 0.15, 0.1]))
        opacity, shadow = _clouds(rng, size, cover)
        image = surface * (1 - opacity) + CLOUD_TOP[:, None, None] * opacity
        image = np.where(shadow[None], image * 0.35, image)
        image = image + rng.normal(0, SENSOR_NOISE, image.shape)
        fmask = np.full((size, size), AEROSOL_LOW, np.uint8)
        cloud = opacity > 0.3
        fmask[(opacity > 0.05) & ~cloud] |= CIRRUS
        fmask[cloud] |= CLOUD
        fmask[shadow] |= SHADOW
        fmask[_dilate(cloud | shadow, 2) & ~(cloud | shadow)] |= ADJACENT
        fmask[(truth == 1) & ~cloud] |= WATER_BIT
        if index % 3 == 2:  # the swath edge crosses the scene on every third date
            yy, xx = np.mgrid[0:size, 0:size]
            outside = xx + 0.4 * yy > size * rng.uniform(0.7, 1.1)
            image[:, outside] = np.nan
            fmask[outside] = FMASK_FILL
        yield date, np.clip(image, 0, 1).astype(np.float32), fmask, truth


def generate(out: Path, seed: int = 0, size: int = 384, acquisitions: int = 12,
             points: int = 200, crs: str = CRS, origin: tuple[float, float] = ORIGIN,
             first_date: dt.date = FIRST_DATE) -> DemoScene:
    """Write the scene (COGs + STAC catalogue + observations CSV) into ``out``.
    ``crs``, ``origin`` (upper-left, metres) and ``first_date`` place it elsewhere."""
    import pystac
    import rasterio
    from affine import Affine
    from rasterio.warp import transform as warp_points, transform_bounds
    from shapely.geometry import box, mapping

    out = Path(out).resolve()  # pystac makes hrefs relative to the items only from absolute paths
    out.mkdir(parents=True, exist_ok=True)
    transform = Affine(RESOLUTION, 0.0, origin[0], 0.0, -RESOLUTION, origin[1])
    bounds = (origin[0], origin[1] - size * RESOLUTION, origin[0] + size * RESOLUTION, origin[1])
    bbox = transform_bounds(crs, "EPSG:4326", *bounds)
    collection = pystac.Collection(
        COLLECTION, "Synthetic HLS-like demo scene made by instageo (not real data)",
        pystac.Extent(pystac.SpatialExtent([list(bbox)]), pystac.TemporalExtent([[None, None]])),
    )
    catalog = pystac.Catalog("instageo-demo", "instageo offline demo catalogue",
                             extra_fields={"instageo:preset": "hls"})  # HLS L30 asset keys and Fmask
    catalog.add_child(collection)
    rng = np.random.default_rng(seed + 1)
    rows, cols = rng.integers(0, size, points), rng.integers(0, size, points)
    picked_date = rng.integers(acquisitions // 3, acquisitions, points)  # leave history before
    labels = np.zeros(points, np.uint8)
    dates = []
    for index, (date, image, fmask, truth) in enumerate(render(seed, size, acquisitions, first_date)):
        dates.append(date)
        item_id = f"HLS.demo.{date.isoformat()}"
        folder = out / COLLECTION / item_id  # pystac's self-contained layout
        folder.mkdir(parents=True, exist_ok=True)
        item = pystac.Item(
            item_id, mapping(box(*bbox)), list(bbox),
            dt.datetime.combine(date, dt.time(10, 30), dt.timezone.utc),
            {"eo:cloud_cover": round(float((fmask & CLOUD > 0).mean() * 100), 2),
             "proj:epsg": int(crs.split(":")[1])},
        )
        scaled = np.where(np.isnan(image), NODATA, np.round(image * 10000)).astype(np.int16)
        for key, band in zip(ASSET_KEYS, scaled):
            _write_cog(folder / f"{key}.tif", band, transform, NODATA, crs)
            item.add_asset(key, pystac.Asset(str(folder / f"{key}.tif"), media_type=pystac.MediaType.COG,
                                             roles=["data"], extra_fields={"raster:bands": [
                                                 {"scale": 1e-4, "offset": 0.0, "nodata": NODATA}]}))
        _write_cog(folder / "Fmask.tif", fmask, transform, FMASK_FILL, crs)
        item.add_asset("Fmask", pystac.Asset(str(folder / "Fmask.tif"), media_type=pystac.MediaType.COG,
                                             roles=["cloud-mask"]))
        collection.add_item(item)
        here = picked_date == index
        labels[here] = truth[rows[here], cols[here]]
    xs, ys = rasterio.transform.xy(transform, rows, cols)
    lons, lats = warp_points(crs, "EPSG:4326", xs, ys)
    observations = out / "observations.csv"
    with open(observations, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "x", "y", "date", "label"])
        for i in range(points):
            writer.writerow([f"obs{i:05d}", f"{lons[i]:.6f}", f"{lats[i]:.6f}",
                             dates[picked_date[i]].isoformat(), int(labels[i])])
    catalog.normalize_hrefs(str(out))
    catalog.make_all_asset_hrefs_relative()
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return DemoScene(out / "catalog.json", observations, dates)


def _write_cog(path: Path, array: np.ndarray, transform, nodata, crs: str) -> None:
    from rasterio.io import MemoryFile
    from rasterio.shutil import copy as copy_dataset

    profile = dict(driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                   dtype=array.dtype, crs=crs, transform=transform, nodata=nodata)
    with MemoryFile() as memory, memory.open(**profile) as dataset:
        dataset.write(array, 1)
        copy_dataset(dataset, path, driver="COG", compress="DEFLATE", blocksize=256,
                     overview_resampling="nearest")


def quicklook(scene: DemoScene, path: Path, columns: int = 4) -> None:
    """Each date of the scene as true colour with its Fmask (cloud, shadow, adjacent) drawn over."""
    import rasterio

    from instageo.data.quicklook import overlay_fmask, rgb_image, save_grid

    tiles = []
    for date in scene.dates:
        folder = scene.catalog.parent / COLLECTION / f"HLS.demo.{date.isoformat()}"
        bands = {}
        for key in ("B04", "B03", "B02", "Fmask"):
            with rasterio.open(folder / f"{key}.tif") as dataset:
                bands[key] = dataset.read(1, masked=True)
        red, green, blue = (np.ma.filled(bands[k].astype(np.float32), np.nan) / 10000 for k in ("B04", "B03", "B02"))
        tiles.append(overlay_fmask(rgb_image(red, green, blue), np.ma.filled(bands["Fmask"], 255)))
    save_grid(tiles, path, columns)

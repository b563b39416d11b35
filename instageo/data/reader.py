"""Read catalogue assets onto chip grids: windowed, warped, scaled, with nodata as NaN.

GDAL reads only the COG blocks a chip touches (WarpedVRT onto the chip grid), with settings
tuned for remote COGs. Hrefs are prepared at read time: relative ones resolved against the
search stage's folder, Planetary Computer ones signed (in memory only), NASA Earthdata ones
read with the user's token (EARTHDATA_TOKEN) or ~/.netrc. Nothing signed is ever written.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from instageo.data.grid import ChipGrid
from instageo.data.presets import BandAsset
from instageo.errors import DataSourceError

# GDAL configuration for reading COGs over HTTP (see GDAL's "Configuration options").
GDAL_OPTIONS: dict[str, object] = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",  # no directory listing per open
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",  # one request for adjacent blocks
    "GDAL_HTTP_MULTIPLEX": "YES",  # HTTP/2 multiplexing where the server offers it
    "GDAL_HTTP_VERSION": "2",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 << 20),
    "GDAL_CACHEMAX": 256,  # MB of block cache
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.TIF,.tiff,.jp2,.JP2",
    "GDAL_HTTP_MAX_RETRY": "4",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "CPL_VSIL_CURL_CHUNK_SIZE": str(64 << 10),
}
OPEN_DATASETS_PER_THREAD = 32


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
        return str((base_dir / href).resolve()) if not os.path.isabs(href) else href
    if signing == "planetary_computer":
        import planetary_computer

        try:
            return planetary_computer.sign(href)
        except Exception as exc:  # the token service is a remote call
            raise DataSourceError(f"cannot sign {href.split('?')[0]} with Planetary Computer: {exc}") from None
    return href


class AssetReader:
    """Reads assets onto chip grids. Keeps recently used files open, one set per thread."""

    def __init__(self, base_dir: Path, signing: str | None = None, auth: str | None = None):
        self.base_dir = Path(base_dir)
        self.signing = signing
        self.options = gdal_options(auth)
        self._local = threading.local()

    def _dataset(self, href: str):
        import rasterio

        cache: OrderedDict = getattr(self._local, "datasets", None) or OrderedDict()
        self._local.datasets = cache
        if href in cache:
            cache.move_to_end(href)
            return cache[href]
        dataset = rasterio.open(prepare_href(href, self.base_dir, self.signing))
        cache[href] = dataset
        if len(cache) > OPEN_DATASETS_PER_THREAD:
            cache.popitem(last=False)[1].close()
        return dataset

    def read(self, asset: BandAsset, grid: ChipGrid, categorical: bool = False) -> np.ndarray:
        """The asset on the chip grid: float32 with NaN for nodata (reflectance scaled), or the
        raw values for categorical rasters (masks, labels) with their own fill outside."""
        import rasterio
        from rasterio.enums import Resampling
        from rasterio.vrt import WarpedVRT

        with rasterio.Env(**self.options):
            src = self._dataset(asset.href)
            nodata = asset.nodata if asset.nodata is not None else src.nodatavals[asset.band - 1]
            if categorical:
                fill = nodata if nodata is not None else 0
                with WarpedVRT(src, crs=grid.crs, transform=grid.affine, width=grid.size,
                               height=grid.size, resampling=Resampling.nearest,
                               src_nodata=nodata, nodata=fill) as vrt:
                    return vrt.read(asset.band)
            with WarpedVRT(src, crs=grid.crs, transform=grid.affine, width=grid.size,
                           height=grid.size, resampling=Resampling.bilinear, src_nodata=nodata,
                           nodata=np.nan, dtype="float32") as vrt:
                data = vrt.read(asset.band)
        return (data * np.float32(asset.scale) + np.float32(asset.offset)).astype(np.float32)

    def close(self) -> None:
        for dataset in getattr(self._local, "datasets", {}).values():
            dataset.close()
        self._local.datasets = OrderedDict()

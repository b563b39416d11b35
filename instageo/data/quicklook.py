"""Quicklook PNGs: true-colour images with the cloud mask drawn over them, to look at data."""

from __future__ import annotations

from pathlib import Path

import numpy as np

# Fmask bits drawn, and their colours: cloud, cloud shadow, adjacent, cirrus.
MASK_COLOURS = ((2, (255, 255, 255)), (8, (255, 0, 255)), (4, (255, 200, 0)), (1, (0, 255, 255)))


def rgb_image(red: np.ndarray, green: np.ndarray, blue: np.ndarray, stretch: float = 0.3) -> np.ndarray:
    """Reflectance (NaN for nodata) to 8-bit RGB with a linear stretch; nodata black."""
    rgb = np.stack([red, green, blue], axis=-1) / stretch
    return (np.nan_to_num(np.clip(rgb, 0, 1), nan=0.0) * 255).astype(np.uint8)


def overlay_fmask(rgb: np.ndarray, fmask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    out = rgb.astype(np.float32)
    valid = fmask != 255
    for bit, colour in MASK_COLOURS:
        hit = valid & ((fmask & bit) > 0)
        out[hit] = (1 - alpha) * out[hit] + alpha * np.array(colour, np.float32)
    return out.astype(np.uint8)


def save_grid(tiles: list[np.ndarray], path: Path, columns: int = 4, gap: int = 4) -> None:
    """Save same-sized HxWx3 tiles side by side (rows of ``columns``) as a PNG."""
    from PIL import Image

    height, width = tiles[0].shape[:2]
    rows = -(-len(tiles) // columns)
    canvas = np.full((rows * (height + gap) - gap, min(columns, len(tiles)) * (width + gap) - gap, 3),
                     40, np.uint8)
    for index, tile in enumerate(tiles):
        r, c = divmod(index, columns)
        canvas[r * (height + gap):r * (height + gap) + height, c * (width + gap):c * (width + gap) + width] = tile
    Image.fromarray(canvas).save(path)

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


DEFAULT_COLOURS = ["#bdbdbd", "#2166ac", "#1b7837", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02",
                   "#a6761d", "#1f78b4", "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6", "#6a3d9a", "#ffff99",
                   "#b15928", "#8dd3c7", "#bebada", "#80b1d3"]


def class_colours(classes: int, declared: list[str] | None = None) -> list[str]:
    """The task's colours, else the defaults (repeated past 20 classes: a legend still tells them apart)."""
    return list(declared) if declared else [DEFAULT_COLOURS[i % len(DEFAULT_COLOURS)] for i in range(classes)]


def hex_rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def label_image(label: np.ndarray, colours: list[str], ignore_index: int) -> np.ndarray:
    """Class ids to RGB; the ignore index (unlabelled) drawn dark."""
    out = np.full(label.shape + (3,), 30, np.uint8)
    for value, colour in enumerate(colours):
        out[label == value] = hex_rgb(colour)
    out[label == ignore_index] = 30
    return out


def chips_quicklook(folder: Path, records, bands: list[str], steps: int, colours: list[str],
                    ignore_index: int, path: Path, limit: int = 8, zoom: int = 4) -> None:
    """Rows of chips: each time step in true colour (masked pixels magenta), then the label."""
    import rasterio

    rgb_index = [bands.index(b) for b in ("red", "green", "blue")] if {"red", "green", "blue"} <= set(bands) else [0, 0, 0]
    tiles = []
    for record in records[:limit]:
        with rasterio.open(folder / record.image) as dataset:
            image = dataset.read().reshape(steps, len(bands), dataset.height, dataset.width)
        with rasterio.open(folder / record.label) as dataset:
            label = dataset.read(1)
        for step in image:
            tile = rgb_image(*(step[i] for i in rgb_index))
            tile[np.isnan(step).all(axis=0)] = (255, 0, 255)
            tiles.append(tile)
        tiles.append(label_image(label, colours, ignore_index))
    tiles = [np.kron(t, np.ones((zoom, zoom, 1), np.uint8)) for t in tiles]
    save_grid(tiles, path, columns=steps + 1)

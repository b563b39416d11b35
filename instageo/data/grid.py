"""Chip grids: where each chip lies, in a projected CRS at the recipe's resolution.

A chip centred on a point lies in the UTM zone of that point (or the recipe's CRS), its
corners snapped to multiples of the resolution so chips of the same zone share one pixel
grid. Label rasters are tiled with chips at a stride, without overlap by default.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from affine import Affine


@dataclass(frozen=True)
class ChipGrid:
    crs: str
    transform: tuple[float, ...]  # the 6 affine coefficients (a, b, c, d, e, f)
    size: int

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        a, _, left, _, e, top = self.transform
        return (left, top + e * self.size, left + a * self.size, top)


def utm_crs(lon: float, lat: float) -> str:
    zone = min(int((lon + 180) // 6) + 1, 60)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


def chip_crs(setting: str, lon: float, lat: float) -> str:
    return utm_crs(lon, lat) if setting.lower() == "utm" else setting


def centred_grid(lon: float, lat: float, size: int, resolution: float, crs_setting: str) -> ChipGrid:
    """The chip of ``size`` pixels whose centre pixel contains (lon, lat)."""
    from pyproj import Transformer

    crs = chip_crs(crs_setting, lon, lat)
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    column, row = math.floor(x / resolution), math.floor(y / resolution)
    left = (column - size // 2) * resolution
    top = (row + 1 + size // 2) * resolution  # the point falls in pixel (size // 2, size // 2)
    return ChipGrid(crs, (resolution, 0.0, left, 0.0, -resolution, top), size)


def tiled_grids(bounds_lonlat: tuple[float, float, float, float], size: int, resolution: float,
                crs_setting: str, stride: int, flush: bool = True) -> list[ChipGrid]:
    """Chips covering a lon/lat extent, ``stride`` pixels apart. ``flush``: the last row and
    column are moved inward to end at the extent's edge (overlapping their neighbours; for
    prediction, which blends overlaps); otherwise they reach past it (padded with nodata when
    read; for label rasters, whose chips must not share pixels)."""
    from rasterio.warp import transform_bounds

    west, south, east, north = bounds_lonlat
    crs = chip_crs(crs_setting, (west + east) / 2, (south + north) / 2)
    left, bottom, right, top = transform_bounds("EPSG:4326", crs, *bounds_lonlat)
    left = math.floor(left / resolution) * resolution
    top = math.ceil(top / resolution) * resolution
    width = max(math.ceil((right - left) / resolution), size)
    height = max(math.ceil((top - bottom) / resolution), size)
    grids = []
    for row in _starts(height, size, stride, flush):
        for column in _starts(width, size, stride, flush):
            transform = (resolution, 0.0, left + column * resolution, 0.0, -resolution,
                         top - row * resolution)
            grids.append(ChipGrid(crs, transform, size))
    return grids


def _starts(extent: int, size: int, stride: int, flush: bool = True) -> list[int]:
    if not flush:
        starts = [0]
        while starts[-1] + size < extent:
            starts.append(starts[-1] + stride)
        return starts
    starts = list(range(0, max(extent - size, 0) + 1, stride))
    if starts[-1] + size < extent:
        starts.append(extent - size)  # cover the far edge too
    return starts


def _in_lonlat(grids: list[ChipGrid], points) -> list[list[tuple[float, float]]]:
    """``points(grid)`` (x, y in the grid's CRS) of each grid, in lon/lat: one projection per CRS."""
    from pyproj import Transformer

    out: list[list[tuple[float, float]]] = [[] for _ in grids]
    for crs in {g.crs for g in grids}:
        at = [i for i, g in enumerate(grids) if g.crs == crs]
        xy = [(i, x, y) for i in at for x, y in points(grids[i])]
        lons, lats = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
            [x for _, x, _ in xy], [y for _, _, y in xy])
        for (i, _, _), lon, lat in zip(xy, lons, lats):
            out[i].append((float(lon), float(lat)))
    return out


def centres_lonlat(grids: list[ChipGrid]) -> list[tuple[float, float]]:
    """(lon, lat) of each chip's centre."""
    def centre(grid: ChipGrid):
        left, bottom, right, top = grid.bounds
        return [((left + right) / 2, (bottom + top) / 2)]

    return [points[0] for points in _in_lonlat(grids, centre)]


def footprints_lonlat(grids: list[ChipGrid]) -> list[tuple[float, float, float, float]]:
    """(west, south, east, north) of each chip in lon/lat (the box around its corners)."""
    def corners(grid: ChipGrid):
        left, bottom, right, top = grid.bounds
        return [(left, bottom), (left, top), (right, bottom), (right, top)]

    return [(min(p[0] for p in c), min(p[1] for p in c), max(p[0] for p in c), max(p[1] for p in c))
            for c in _in_lonlat(grids, corners)]


Box = tuple[float, float, float, float]  # west, south, east, north


def union_boxes(boxes) -> Box:
    """The box around all ``boxes``."""
    boxes = list(boxes)
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def boxes_touch(a: Box, b: Box) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]

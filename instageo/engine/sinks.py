"""Sinks: where the blended rows go. ``ClassCogs`` writes prediction.tif (classes, with the
bundle's colours and names), confidence.tif and, when the head colours the input, rgb.tif;
``FeatureCog`` writes embeddings.tif (the features per patch or pixel, unit length, coded).
Rows stream into plain GeoTIFFs and become COGs at the end (engine/cog.py). A writer holds
rows [rows[0], rows[1]) of the layout (a dask block's, or all), georeferenced in place.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from instageo.engine import cog
from instageo.engine.vectors import INT8_NODATA, encode, unit

NODATA_CLASS = 255


def classes_of(probabilities: np.ndarray, covered: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Classes (uint8, NODATA_CLASS where nothing covered) and confidence (float32, NaN there)."""
    classes = np.where(covered, probabilities.argmax(0), NODATA_CLASS).astype(np.uint8)
    confidence = np.where(covered, probabilities.max(0), np.nan).astype(np.float32)
    return classes, confidence


class RowWriter:
    """What the writers share: their row files, the rows they hold, the outline mask."""

    names: list[str]
    interleave: str | None = None  # the row files' (GDAL's default: band)

    def __init__(self, folder: Path, layout, rows: tuple[int, int] | None, outline):
        self.folder, self.layout, self.outline = Path(folder), layout, outline
        self.rows = rows or (0, layout.height)
        self.datasets: dict = {}

    def __enter__(self):
        from affine import Affine

        transform = self.layout.transform * Affine.translation(0, self.rows[0])
        for name in self.names:
            count, dtype, nodata = self.bands(name)
            self.datasets[name] = cog.open_rows(self.raw(name), self.layout.width, self.rows[1] - self.rows[0], count,
                                                dtype, self.layout.crs, transform, nodata, self.interleave)
            self.describe(name, self.datasets[name])
        return self

    def __exit__(self, *exc) -> None:
        for dataset in self.datasets.values():
            dataset.close()

    def raw(self, name: str) -> Path:
        return self.folder / f".{name}.raw.tif"

    def discard(self) -> None:
        for name in self.names:
            self.raw(name).unlink(missing_ok=True)

    def clip(self, row: int, length: int) -> tuple[int, int, slice]:
        """The rows of [row, row + length) this writer holds: (start, end, slice of the given)."""
        start, end = max(row, self.rows[0]), min(row + length, self.rows[1])
        return start, end, slice(start - row, end - row)

    def outside(self, start: int, rows: int) -> np.ndarray | None:
        """Where rows from ``start`` of the layout fall outside the outline (None: no outline)."""
        if self.outline is None:
            return None
        from affine import Affine
        from rasterio.features import geometry_mask

        return geometry_mask([self.outline], (rows, self.layout.width), self.layout.transform * Affine.translation(0, start))

    def window(self, start: int, rows: int):
        from rasterio.windows import Window

        return Window(0, start - self.rows[0], self.layout.width, rows)

    def write_rows(self, row: int, arrays: dict[str, np.ndarray]) -> None:
        for name, array in arrays.items():
            window = self.window(row, array.shape[-2])
            if array.ndim == 2:
                self.datasets[name].write(array, 1, window=window)
            else:
                self.datasets[name].write(array, window=window)

    def describe(self, name: str, dataset) -> None:
        """Band names, colours and tags of a file (before any row is written)."""

    def write_blend(self, row: int, mean: np.ndarray, covered: np.ndarray, rgb: np.ndarray | None) -> None:
        start, end, part = self.clip(row, len(covered))
        if end > start:
            rgb = rgb[:, part] if rgb is not None else None
            self.write_rows(start, self.rows_of(mean[:, part], covered[part], rgb, self.outside(start, end - start)))

    def rows_of(self, mean: np.ndarray, covered: np.ndarray, rgb: np.ndarray | None,
                outside: np.ndarray | None) -> dict[str, np.ndarray]:
        """The files' rows of the blend's (counted in ``counts``); ``outside``: of the outline."""
        raise NotImplementedError


class ClassCogs:
    """The class map's sink: prediction.tif, confidence.tif and (with ``colour``) rgb.tif."""

    def __init__(self, folder: Path, bundle: dict, colour=None):
        self.folder, self.bundle, self.colour = Path(folder), bundle, colour

    def writer(self, layout, rows=None, outline=None, folder=None) -> ClassWriter:
        return ClassWriter(folder or self.folder, layout, self.bundle, self.colour, outline, rows)


class ClassWriter(RowWriter):
    """Classes and confidence from the blended probabilities; ``counts``: pixels per class."""

    BANDS = {"prediction": (1, "uint8", NODATA_CLASS), "confidence": (1, "float32", np.nan), "rgb": (3, "uint8", 0)}

    def __init__(self, folder: Path, layout, bundle: dict, colour, outline=None, rows=None):
        super().__init__(folder, layout, rows, outline)
        self.bundle, self.colour = bundle, colour
        self.names = ["prediction", "confidence"] + (["rgb"] if colour else [])
        self.counts = np.zeros(len(bundle["classes"]), np.int64)

    def bands(self, name: str) -> tuple:
        return self.BANDS[name]

    def describe(self, name: str, dataset) -> None:
        if name == "prediction":
            from instageo.data.quicklook import hex_rgb

            dataset.write_colormap(1, {i: (*hex_rgb(c), 255) for i, c in enumerate(self.bundle["colours"])})
            dataset.update_tags(1, **{f"class_{i}": n for i, n in enumerate(self.bundle["classes"])})
            dataset.set_band_description(1, "class")
        else:
            for band in range(1, dataset.count + 1):
                dataset.set_band_description(band, self.colour.name if name == "rgb" else "confidence")
        dataset.update_tags(model=f"{self.bundle['backbone']} depth {self.bundle['depth']}")

    def rows_of(self, probabilities: np.ndarray, covered: np.ndarray, rgb: np.ndarray | None,
                outside: np.ndarray | None) -> dict[str, np.ndarray]:
        classes, confidence = classes_of(probabilities, covered)
        if outside is not None:  # outside the GeoJSON area: nodata
            classes[outside], confidence[outside] = NODATA_CLASS, np.nan
            if rgb is not None:
                rgb[:, outside] = 0
        known = classes[classes != NODATA_CLASS]
        self.counts += np.bincount(known.ravel(), minlength=len(self.counts))[:len(self.counts)]
        return {"prediction": classes, "confidence": confidence, **({"rgb": rgb} if "rgb" in self.names else {})}

    def finish_block(self) -> dict[str, str]:
        return self._cogs(overviews=False)

    def finish(self) -> dict[str, str]:
        return self._cogs(overviews=True)

    def _cogs(self, overviews: bool) -> dict[str, str]:
        """COGs side by side (GDAL works outside the GIL): mode overviews for classes, average
        for the rest."""
        def one(name: str) -> str:
            return cog.to_cog(self.raw(name), self.folder / f"{name}.tif",
                              "mode" if name == "prediction" else "average", overviews)

        with ThreadPoolExecutor(len(self.names)) as pool:
            return dict(zip(self.names, pool.map(one, self.names)))


class FeatureCog:
    """The embeddings' sink: embeddings.tif, per ``scale`` x ``scale`` cell (1: per pixel), each
    vector unit length and coded as ``kind`` (int8, binary or none: float32)."""

    def __init__(self, folder: Path, dims: int, kind: str, scale: int):
        self.folder, self.dims, self.kind, self.scale = Path(folder), dims, kind, scale

    def writer(self, layout, rows=None, outline=None, folder=None) -> FeatureWriter:
        return FeatureWriter(folder or self.folder, layout, self, outline, rows)


class FeatureWriter(RowWriter):
    """The blended PCA features per pixel (float32, NaN where none); ``finish`` averages them
    per cell, makes them unit length, codes them and writes the COG. ``counts``: [pixels with
    features]."""

    names = ["features"]
    interleave = "pixel"

    def __init__(self, folder: Path, layout, sink: FeatureCog, outline=None, rows=None):
        super().__init__(folder, layout, rows, outline)
        self.sink = sink
        self.counts = np.zeros(1, np.int64)

    def bands(self, name: str) -> tuple:
        return self.sink.dims, "float32", np.nan

    def rows_of(self, mean: np.ndarray, covered: np.ndarray, rgb, outside: np.ndarray | None) -> dict[str, np.ndarray]:
        if outside is not None:
            covered = covered & ~outside
        self.counts += int(covered.sum())
        return {"features": np.where(covered, mean, np.nan).astype(np.float32)}

    def finish_block(self) -> dict[str, str]:
        """The block's features as they are (float32 rows): the mosaic codes the whole area."""
        self.raw("features").rename(self.folder / "features.tif")
        return {"features": "features.tif"}

    def finish(self) -> dict[str, str]:
        import rasterio
        from affine import Affine
        from rasterio.windows import Window

        layout, dims, kind, scale = self.layout, self.sink.dims, self.sink.kind, self.sink.scale
        width, height = math.ceil(layout.width / scale), math.ceil(layout.height / scale)
        count, dtype = {"int8": (dims, "int8"), "binary": (math.ceil(dims / 8), "uint8"), "none": (dims, "float32")}[kind]
        nodata = {"int8": INT8_NODATA, "binary": None, "none": np.nan}[kind]
        coded = self.folder / ".embeddings.raw.tif"
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=layout.crs,
                       transform=layout.transform * Affine.scale(scale), nodata=nodata, tiled=True,
                       blockxsize=256, blockysize=256, compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")
        step = scale * max(1, 256 // scale)  # rows of features per pass: whole cells
        with rasterio.open(self.raw("features")) as features, rasterio.open(coded, "w", **profile) as out:
            for first in range(0, layout.height, step):
                rows = min(step, layout.height - first)
                values = features.read(window=Window(0, first, layout.width, rows))
                cells = math.ceil(rows / scale)
                padded = np.full((dims, cells * scale, width * scale), np.nan, np.float32)
                padded[:, :rows, :layout.width] = values
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a cell with no data: NaN
                    cell = np.nanmean(padded.reshape(dims, cells, scale, width, scale), axis=(2, 4))
                vectors, valid = unit(np.nan_to_num(cell), axis=0)
                valid &= ~np.isnan(cell).all(axis=0)
                codes = encode(vectors, kind, axis=0)
                if kind == "int8":
                    codes[:, ~valid] = INT8_NODATA
                elif kind == "none":
                    codes[:, ~valid] = np.nan
                window = Window(0, first // scale, width, cells)
                out.write(codes, window=window)
                if kind == "binary":
                    out.write_mask((valid * 255).astype(np.uint8), window=window)
            for band in range(1, count + 1):
                out.set_band_description(band, f"bits {8 * (band - 1)}-{8 * band - 1}" if kind == "binary"
                                         else f"pc{band}")
        self.raw("features").unlink()
        return {"embeddings": cog.to_cog(coded, self.folder / "embeddings.tif", "nearest")}

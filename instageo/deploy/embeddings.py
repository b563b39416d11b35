"""Compressed embeddings: the student's encoder features over the area, as a COG.

The export stage writes the encoder alone (bundle/encoder.onnx: the tokens as the head sees
them, (batch, steps' x dim, H / patch, W / patch)) and fits a PCA on the train chips' patch
features (bundle/embeddings.json). The `embeddings` stage runs the encoder over the area
with the predict stage's tiles, reads and blending (the PCA projection blended per pixel),
then, per patch (the mean over it) or per pixel, makes each vector unit length and
quantises it: int8 as AlphaEarth lays it out (round(127 x value), -128 nodata), the sign
bits (binary, 8 per byte, nodata in the mask), or float32 (NaN nodata). embeddings.json
beside the COG says how to decode it.

How much is lost is measured in the export stage: a linear probe (multinomial logistic
regression) fitted on the train split's labelled pixels and scored on test, on the float32
features at full dimension, after PCA, after PCA + int8 and as binary codes, beside each
one's bytes per vector.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

INT8_SCALE, INT8_NODATA = 127, -128
PCA_SAMPLE = 20_000  # patch vectors the PCA is fitted on, at most
FILE_ENCODER, FILE_PCA = "bundle/encoder.onnx", "bundle/embeddings.json"


# the vectors: PCA, unit length, codes and back (numpy: the stage never imports torch)

def fit_pca(features: np.ndarray, dims: int) -> dict:
    """Mean, the first ``dims`` principal axes and their share of the variance, of (N, D)."""
    features = features.astype(np.float64)
    mean = features.mean(0)
    _, singular, axes = np.linalg.svd(features - mean, full_matrices=False)
    dims = min(dims, axes.shape[0])
    variance = singular**2 / max(float((singular**2).sum()), 1e-30)
    return {"mean": mean.tolist(), "components": axes[:dims].tolist(), "explained_variance": variance[:dims].tolist()}


def project(features: np.ndarray, pca: dict, axis: int = -1) -> np.ndarray:
    """PCA coordinates of vectors along ``axis``."""
    moved = np.moveaxis(features, axis, -1).astype(np.float32)
    out = (moved - np.asarray(pca["mean"], np.float32)) @ np.asarray(pca["components"], np.float32).T
    return np.moveaxis(out, -1, axis)


def unit(vectors: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length vectors along ``axis`` and where they exist (a zero or NaN vector does not)."""
    norm = np.sqrt(np.nansum(vectors.astype(np.float32) ** 2, axis=axis, keepdims=True))
    valid = np.squeeze((norm > 0) & np.isfinite(norm), axis)
    return np.where(norm > 0, vectors / np.where(norm > 0, norm, 1), 0).astype(np.float32), valid


def encode(vectors: np.ndarray, kind: str, axis: int = -1) -> np.ndarray:
    """Codes of unit vectors: int8, packed sign bits (uint8) or float32."""
    if kind == "int8":
        return np.clip(np.rint(vectors * INT8_SCALE), -INT8_SCALE, INT8_SCALE).astype(np.int8)
    if kind == "binary":
        return np.packbits(vectors > 0, axis=axis)
    return vectors.astype(np.float32)


def decode(codes: np.ndarray, kind: str, dims: int, axis: int = -1) -> np.ndarray:
    """Vectors of codes (what a user of the COG does; embeddings.json says the same)."""
    if kind == "int8":
        return codes.astype(np.float32) / INT8_SCALE
    if kind == "binary":
        bits = np.unpackbits(codes, axis=axis, count=dims).astype(np.float32)
        return (2 * bits - 1) / math.sqrt(dims)
    return codes.astype(np.float32)


def probe_markdown(report: dict) -> list[str]:
    """report.md's table of what compressing each variant's embeddings lost (export.embeddings)."""
    teacher = [("teacher", (report.get("teacher") or {}).get("embeddings"))]
    rows = [(name, e) for name, e in teacher + [(v["name"], v.get("embeddings")) for v in report.get("variants", [])]
            if isinstance(e, dict) and e.get("probe_accuracy")]
    if not rows:
        return []
    lines = ["", "## Embeddings: what compression loses", "",
             "A linear probe (logistic regression) fitted on the train split's labelled pixels, accuracy on "
             f"{rows[0][1]['probe_split']}; bytes per patch vector and how many times smaller than float32 at the "
             "encoder's full dimension.", "",
             "| variant | float32 (full) | PCA | PCA + int8 | binary | explained variance | bytes: float32 / int8 / binary "
             "| int8 smaller by |", "|---|---|---|---|---|---|---|---|"]
    for name, e in rows:
        accuracy, size = e["probe_accuracy"], e["bytes_per_vector"]
        lines.append(f"| {name} | {accuracy['float32']:.4f} ({e['features']} dims) | {accuracy['pca']:.4f} ({e['dims']}) "
                     f"| {accuracy['int8']:.4f} | {accuracy['binary']:.4f} | {e['explained_variance']:.3f} | "
                     f"{size['float32']} / {size['int8']} / {size['binary']} | {e['compression']['int8']:g}x |")
    return lines


# the export stage's part (torch)

def export_encoder(model, sample: tuple, workdir: Path, recipe, data: dict) -> dict:
    """bundle/encoder.onnx, the PCA of the train chips' patch features (bundle/embeddings.json)
    and the probe's measure of what PCA and quantisation lose. Returns the summary."""
    import torch

    from instageo.deploy import onnx

    encoder = Encoder(model).eval()
    onnx.export(encoder, sample, workdir / FILE_ENCODER, recipe.export.onnx.opset, output="features")
    spec = recipe.export.embeddings
    patch = model.encoder.spec.patch_size
    with torch.no_grad():
        features = {name: encoder_features(encoder, split) for name, split in data.items()}
    train = features["train"]
    vectors = train.transpose(0, 2, 3, 1).reshape(-1, train.shape[1])
    rng = np.random.default_rng(0)
    sample_rows = rng.choice(len(vectors), min(len(vectors), PCA_SAMPLE), replace=False)
    pca = fit_pca(vectors[sample_rows], spec.dims)
    dims = len(pca["components"])
    scored = next(n for n in ("test", "val") if n in data)
    from instageo.model.tasks import regression

    probe = None if regression(recipe) else _probe(features["train"], data["train"], features[scored], data[scored],
                                                   pca, patch, recipe)  # the probe is a classifier
    full = 4 * train.shape[1]
    summary = {"features": int(train.shape[1]), "dims": dims, "patch": patch, "quantize": spec.quantize,
               "level": spec.level, "explained_variance": round(float(sum(pca["explained_variance"])), 6),
               "probe_split": scored, "probe_accuracy": probe,
               "bytes_per_vector": {"float32": full, "pca": 4 * dims, "int8": dims, "binary": math.ceil(dims / 8)},
               "compression": {k: round(full / v, 2) for k, v in
                               (("pca", 4 * dims), ("int8", dims), ("binary", math.ceil(dims / 8)))}}
    (workdir / FILE_PCA).write_text(json.dumps({**pca, "patch": patch, "features": int(train.shape[1])}))
    return summary


def Encoder(model):  # noqa: N802 (a factory that reads as the class it makes)
    """The model's encoder alone: tokens (B, T' x D, H', W'), what its head reads."""
    import torch

    class _Encoder(torch.nn.Module):
        def __init__(self, pixel_model):
            super().__init__()
            self.pixel_model = pixel_model
            self.uses_coordinates = pixel_model.uses_coordinates

        def forward(self, x, temporal=None, location=None):
            tokens = self.pixel_model.encoder(x, temporal=temporal, location=location)
            batch, frames, height, width, dim = tokens.shape
            return tokens.permute(0, 1, 4, 2, 3).reshape(batch, frames * dim, height, width)

    return _Encoder(model)


def encoder_features(encoder, split, batch_size: int = 32) -> np.ndarray:
    """(N, F, H', W') float32 encoder features of a split's chips."""
    parts = [encoder(*split.inputs(slice(i, i + batch_size))).float().numpy() for i in range(0, len(split), batch_size)]
    return np.concatenate(parts)


def _probe(train_features, train, test_features, test, pca, patch: int, recipe) -> dict:
    """Test accuracy of a linear probe per representation (labelled pixels: each takes its
    patch's vector)."""
    ignore = recipe.data.chips.label.ignore_index
    dims = len(pca["components"])

    def pixels(features, split):
        labels = split.y.numpy()
        upsampled = features.repeat(patch, axis=2).repeat(patch, axis=3)[:, :, :labels.shape[1], :labels.shape[2]]
        keep = labels != ignore
        return upsampled.transpose(0, 2, 3, 1)[keep], labels[keep]

    (x_train, y_train), (x_test, y_test) = pixels(train_features, train), pixels(test_features, test)
    reduced = [unit(project(x, pca))[0] for x in (x_train, x_test)]  # PCA, unit length
    forms = {"float32": (x_train, x_test), "pca": reduced,
             **{kind: [decode(encode(x, kind), kind, dims) for x in reduced] for kind in ("int8", "binary")}}
    classes = len(recipe.task.classes)
    return {name: round(logistic_probe(fit_on, y_train, score_on, y_test, classes), 6)
            for name, (fit_on, score_on) in forms.items()}


def logistic_probe(x_train, y_train, x_test, y_test, classes: int) -> float:
    """Accuracy on test of multinomial logistic regression (standardised features, L2 1e-4,
    L-BFGS) fitted on train."""
    import torch

    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    xt = torch.from_numpy(((x_train - mean) / std).astype(np.float32))
    yt = torch.from_numpy(y_train.astype(np.int64))
    linear = torch.nn.Linear(xt.shape[1], classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xt), yt) + 1e-4 * linear.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        predicted = linear(torch.from_numpy(((x_test - mean) / std).astype(np.float32))).argmax(1).numpy()
    return float((predicted == y_test).mean())


# the `embeddings` stage (numpy and ONNX Runtime, as the predict stage)

def run(recipe, inputs: dict, ctx):
    """A student's embeddings over the (first) prediction area (the `embeddings` stage)."""
    return embeddings_map(recipe, inputs["search"], inputs["export"], ctx)


def run_teacher(recipe, inputs: dict, ctx):
    """The teacher's, once per teacher (the `teacher_embeddings` stage)."""
    return embeddings_map(recipe, inputs["search"], inputs["teacher_export"], ctx)


def embeddings_map(recipe, search, export, ctx):
    """The encoder of ``export``'s bundle over the (first) prediction area."""
    from instageo.deploy.engine import predict_rows
    from instageo.deploy.predict import areas_of, plan_tiles
    from instageo.runner.stage import StageOutput

    bundle = json.loads(export.path("bundle").read_text())
    pca = json.loads(export.path("embeddings_pca").read_text())
    spec, chips = recipe.export.embeddings, recipe.data.chips
    dims = len(pca["components"])
    tiling = plan_tiles(recipe, search, dims, ctx, areas_of(recipe, search)[0])
    model = EncoderTiles(export.path("encoder"), bundle, chips.size, tiling.overlap, pca)
    raster = FeatureRaster(ctx.workdir, tiling.layout, dims)
    with raster:
        predict_rows(tiling.jobs, model, recipe.export.predict.batch_size, raster, ctx.track)
    scale = pca["patch"] if spec.level == "patch" else 1
    written = raster.finish(spec.quantize, scale, dims)
    probe = export.summary.get("embeddings", {})
    sidecar = {
        "file": "embeddings.tif", "dims": dims, "quantize": spec.quantize, "level": spec.level,
        "resolution_m": chips.resolution * scale, "crs": tiling.layout.crs, "date": tiling.date.isoformat(),
        "model": f"{bundle['backbone']} depth {bundle['depth']} encoder (bundle/encoder.onnx)",
        "decode": DECODE[spec.quantize], "scale": INT8_SCALE if spec.quantize == "int8" else None,
        "nodata": INT8_NODATA if spec.quantize == "int8" else ("NaN" if spec.quantize == "none" else "the mask band"),
        "pca": {"mean": pca["mean"], "components": pca["components"],
                "explained_variance": pca["explained_variance"],
                "how": "unit((features - mean) @ components.T), features from bundle/encoder.onnx, blended over "
                       "overlapping tiles per pixel, then averaged per patch"},
        "probe": {k: probe.get(k) for k in ("probe_split", "probe_accuracy", "bytes_per_vector", "compression")},
    }
    (ctx.workdir / "embeddings.json").write_text(json.dumps(sidecar, indent=1))
    return StageOutput(files={"embeddings": "embeddings.tif", "sidecar": "embeddings.json"}, summary={
        "embeddings_map": "@embeddings", "embeddings_area": {
            "bbox": list(tiling.area), "date": tiling.date.isoformat(), "tiles": len(tiling.jobs), **written,
            "dims": dims, "quantize": spec.quantize, "level": spec.level}})


DECODE = {"int8": "value = code / 127 (unit vectors, up to rounding); -128: no data",
          "binary": "bits = unpackbits(bands, count=dims) (band 1's high bit first); value = (2 x bit - 1) / "
                    "sqrt(dims); the mask marks no data",
          "none": "value = the band (float32 unit vectors); NaN: no data"}


class EncoderTiles:
    """The encoder over tiles, as engine.TileModel runs the whole model: each tile's features
    projected on the PCA, per pixel (nearest: a patch's vector over its pixels), to blend."""

    def __init__(self, path: Path, bundle: dict, size: int, overlap: int, pca: dict):
        from instageo.deploy.engine import TileModel

        self.tiles = TileModel(path, bundle, size, overlap, colour=None)
        self.weight, self.colour, self.pca = self.tiles.weight, None, pca
        self.channels, self.patch, self.size = len(pca["components"]), pca["patch"], size

    def prepare(self, job, stack):
        return self.tiles.prepare(job, stack)

    def predict(self, batch: list) -> list[tuple]:
        from instageo.deploy import onnx

        if not batch:
            return []
        inputs = tuple(np.stack([entry[i] for entry in batch]) for i in (2, 3, 4))
        features = project(onnx.run(self.tiles.session, inputs, len(batch)), self.pca, axis=1)
        pixels = features.repeat(self.patch, axis=2).repeat(self.patch, axis=3)[:, :, :self.size, :self.size]
        return [(grid, tile, np.where(stack.invalid.all(axis=0), 0.0, self.weight), None)
                for (grid, stack, *_), tile in zip(batch, pixels)]


class FeatureRaster:
    """The blended PCA features per pixel, streamed to a temporary float32 GeoTIFF; ``finish``
    averages them per patch, makes them unit length, quantises them and writes the COG."""

    def __init__(self, folder: Path, layout, dims: int):
        self.folder, self.layout, self.dims = folder, layout, dims
        self.rows = (0, layout.height)
        self.raw = folder / ".features.raw.tif"

    def __enter__(self):
        import rasterio

        self.dataset = rasterio.open(self.raw, "w", driver="GTiff", width=self.layout.width, height=self.layout.height,
                                     count=self.dims, dtype="float32", crs=self.layout.crs,
                                     transform=self.layout.transform, nodata=np.nan, tiled=False, blockysize=1,
                                     interleave="pixel", compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")
        return self

    def __exit__(self, *exc):
        self.dataset.close()

    def write_blend(self, row: int, mean: np.ndarray, covered: np.ndarray, rgb) -> None:
        from rasterio.windows import Window

        rows = min(len(covered), self.layout.height - row)
        if rows > 0:
            values = np.where(covered[:rows], mean[:, :rows], np.nan).astype(np.float32)
            self.dataset.write(values, window=Window(0, row, self.layout.width, rows))

    def finish(self, kind: str, scale: int, dims: int) -> dict:
        """embeddings.tif from the features: per ``scale`` x ``scale`` cell (1: per pixel)."""
        import warnings

        import rasterio
        from affine import Affine
        from rasterio.shutil import copy as copy_dataset
        from rasterio.windows import Window

        layout = self.layout
        width, height = math.ceil(layout.width / scale), math.ceil(layout.height / scale)
        count, dtype = {"int8": (dims, "int8"), "binary": (math.ceil(dims / 8), "uint8"),
                        "none": (dims, "float32")}[kind]
        nodata = {"int8": INT8_NODATA, "binary": None, "none": np.nan}[kind]
        coded = self.folder / ".embeddings.raw.tif"
        profile = dict(driver="GTiff", width=width, height=height, count=count, dtype=dtype, crs=layout.crs,
                       transform=layout.transform * Affine.scale(scale), nodata=nodata, tiled=True,
                       blockxsize=256, blockysize=256, compress="ZSTD", zstd_level=1, bigtiff="IF_SAFER")
        step = scale * max(1, 256 // scale)  # rows of features per pass: whole cells
        with rasterio.open(self.raw) as features, rasterio.open(coded, "w", **profile) as out:
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
        target = self.folder / "embeddings.tif"
        copy_dataset(coded, target, driver="COG", compress="DEFLATE", blocksize=256, overview_resampling="nearest",
                     bigtiff="IF_SAFER")
        coded.unlink()
        self.raw.unlink()
        return {"width": width, "height": height, "bytes": target.stat().st_size}

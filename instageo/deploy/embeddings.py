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

from instageo.engine.bundle import read_bundle
from instageo.engine.vectors import INT8_NODATA, INT8_SCALE, decode, encode, fit_pca, project, unit

PCA_SAMPLE = 20_000  # patch vectors the PCA is fitted on, at most
FILE_ENCODER, FILE_PCA = "bundle/encoder.onnx", "bundle/embeddings.json"


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
    from instageo import engine
    from instageo.deploy.maps import executor_of
    from instageo.deploy.predict import areas_of, plan_tiles
    from instageo.engine.heads import EncoderHead
    from instageo.engine.sinks import FeatureCog
    from instageo.engine.tiling import TileSpec
    from instageo.runner.stage import StageOutput

    bundle = read_bundle(export.path("bundle").parent)
    pca = json.loads(export.path("embeddings_pca").read_text())
    spec, chips = recipe.export.embeddings, recipe.data.chips
    dims = len(pca["components"])
    scale = pca["patch"] if spec.level == "patch" else 1
    tiles = TileSpec.of_recipe(recipe)
    tiling = plan_tiles(recipe, search, dims, ctx, areas_of(recipe, search)[0], tiles)
    head = EncoderHead(export.path("encoder"), bundle, chips.size, tiling.overlap, pca)
    done = engine.predict(tiles, tiling, head, FeatureCog(ctx.workdir, dims, spec.quantize, scale),
                          executor_of(recipe.export.predict), ctx.track, log=ctx.log)
    width, height = (math.ceil(side / scale) for side in (tiling.layout.width, tiling.layout.height))
    written = {"width": width, "height": height, "bytes": (ctx.workdir / done.files["embeddings"]).stat().st_size}
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

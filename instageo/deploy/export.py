"""The `export` stage: each student to ONNX, checked against PyTorch, packed as a bundle.

bundle/ holds everything prediction needs and nothing else: model.onnx (and model.int8.onnx
when asked), bundle.json with the band list, normalisation statistics, chip spec, classes and
colours, the recipe excerpt and the metrics.
"""

from __future__ import annotations

import numpy as np

from instageo.data.quicklook import class_colours
from instageo.deploy import onnx
from instageo.errors import StageError
from instageo.files import write_json_atomic
from instageo.model import tasks
from instageo.recipe.backbones import backbone_spec
from instageo.outputs import Tensor
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult

PARITY_CHIPS = 32


FILE_INT8 = "bundle/model.int8.onnx"
FILE_FP16 = "bundle/model.fp16.onnx"
FILES = {"onnx": "bundle/model.onnx", "bundle": "bundle/bundle.json", "stac_item": "bundle/item.json"}


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """A student's bundle (the `export` stage), with its int8 twin when asked (the `speed`
    stage times them all)."""
    model, meta, data, sample = _load(recipe, inputs["chips"], inputs["student"])
    summary = _export_bundle(model, meta, sample, ctx.workdir, recipe, inputs["student"].summary,
                             inputs["chips"], data if recipe.export.onnx.quantize else None)
    files = dict(FILES, **({"onnx_int8": FILE_INT8} if recipe.export.onnx.quantize else {}),
                 **({"onnx_fp16": FILE_FP16} if recipe.export.onnx.float16 else {}))
    _export_encoder("student", model, sample, ctx, recipe, data, files, summary)
    return StageOutput(files=files, summary=summary)


def _export_encoder(whose: str, model, sample, ctx: StageContext, recipe: Recipe, data, files: dict,
                    summary: dict) -> None:
    """With export.embeddings for ``whose`` encoder: the encoder alone, its PCA and what
    compression loses (into ``files`` and ``summary``)."""
    if recipe.export.embeddings is None or recipe.export.embeddings.model != whose:
        return
    from instageo.deploy import embeddings

    summary["embeddings"] = embeddings.export_encoder(model, sample, ctx.workdir, recipe, data)
    files.update(encoder=embeddings.FILE_ENCODER, embeddings_pca=embeddings.FILE_PCA)


def run_teacher(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """The teacher's bundle (the `teacher_export` stage, when export.onnx.teacher): once per
    teacher, for its own prediction map and for the students to be timed beside."""
    model, meta, data, sample = _load(recipe, inputs["chips"], inputs["teacher"])
    summary = _export_bundle(model, meta, sample, ctx.workdir, recipe, inputs["teacher"].summary, inputs["chips"])
    files = dict(FILES, **({"onnx_fp16": FILE_FP16} if recipe.export.onnx.float16 else {}))
    _export_encoder("teacher", model, sample, ctx, recipe, data, files, summary)
    return StageOutput(files=files, summary=summary)


def _load(recipe: Recipe, chips: StageResult, trained: StageResult):
    """A trained model, its meta, the splits, and the parity sample (test chips first)."""
    model, meta = tasks.load(trained.path("model"))
    data = tasks.splits(recipe, chips, meta["normalization"])
    split = data[next(n for n in ("test", "val", "train") if n in data)]
    return model, meta, data, split.inputs(slice(0, PARITY_CHIPS))


def _export_bundle(model, meta: dict, sample, workdir, recipe: Recipe, trained: dict, chips: StageResult,
                   quantize_on: dict | None = None) -> dict:
    """bundle/model.onnx, checked against PyTorch (beyond the tolerance the stage fails), its
    int8 twin checked on the splits of ``quantize_on`` when given, bundle/bundle.json and
    bundle/item.json (STAC MLM). Returns the summary of the checks."""
    from instageo.deploy.stac_meta import training_extent, write_model_item

    spec = recipe.export.onnx
    (workdir / "bundle").mkdir(exist_ok=True)
    onnx.export(model, sample, workdir / FILES["onnx"], spec.opset)
    session = onnx.session(workdir / FILES["onnx"])
    check = onnx.parity(model, session, sample)
    if check["max_abs_diff"] > spec.tolerance:
        raise StageError(f"ONNX output differs from PyTorch by {check['max_abs_diff']:.2e} "
                         f"(export.onnx.tolerance {spec.tolerance:g})")
    int8 = None
    if quantize_on is not None:
        onnx.quantize(workdir / FILES["onnx"], workdir / FILE_INT8)
        int8 = _int8_check(session, onnx.session(workdir / FILE_INT8), quantize_on, recipe)
    float16 = None
    if spec.float16:
        onnx.to_float16(workdir / FILES["onnx"], workdir / FILE_FP16)
        float16 = onnx.parity(model, onnx.session(workdir / FILE_FP16), sample)
    bundle = _bundle(recipe, meta, trained, int8, float16)
    write_json_atomic(workdir / FILES["bundle"], bundle)
    weights = recipe.teacher.weights
    write_model_item(workdir / "bundle", bundle, trained["params"], *training_extent(chips.path("index")),
                     pretrained=None if weights is None else weights.name)
    return {"onnx": "@onnx", "onnx_max_abs_diff": round(check["max_abs_diff"], 9),
            "onnx_argmax_agreement": check["argmax_agreement"], **({"int8": int8} if int8 else {}),
            **({"float16": float16} if float16 else {})}


def _int8_check(session, int8, data: dict, recipe: Recipe) -> dict:
    """The int8 model's metric and its change against the float model, on val (what predict
    decides on: test is never used to choose) and on test (reported)."""
    from instageo.model.metrics import regression_metrics, segmentation_metrics

    regression = tasks.regression(recipe)
    metric = "rmse" if regression else "miou"
    found = {"metric": metric}
    for name in ("val", "test"):
        if name not in data:
            continue
        split = data[name]
        chips = tuple(t.numpy() for t in split.inputs())
        outputs = [onnx.run(s, chips) for s in (session, int8)]
        y = split.y.numpy()
        if regression:
            labelled = ~np.isnan(y)
            scores = [regression_metrics(o[:, 0][labelled], y[labelled])["rmse"] for o in outputs]
        else:
            labelled = y != recipe.data.chips.label.ignore_index
            scores = [segmentation_metrics(o.argmax(1)[labelled], y[labelled], tasks.outputs(recipe))["miou"]
                      for o in outputs]
        found[name] = {"float32": scores[0], "int8": scores[1], "delta": round(scores[1] - scores[0], 6)}
    return found


def _bundle(recipe: Recipe, meta: dict, trained: dict, int8: dict | None, float16: dict | None = None) -> dict:
    """bundle.json (``instageo.outputs.Bundle``, schemas/bundle.schema.json)."""
    from instageo.recipe.presets import preset_for
    from instageo.outputs import Bundle

    spec = recipe.data.chips
    bands, classes, norm = list(spec.bands), list(recipe.task.classes), meta["normalization"]
    coordinates = backbone_spec(meta["backbone"]).coords
    chips = Tensor(name="chips", shape=["batch", len(bands), spec.time.steps, spec.size, spec.size],
                   description="(batch, bands, steps, height, width): each band normalised as `normalization` "
                               "says, in `bands` order, steps oldest first")
    inputs = [chips] + ([
        Tensor(name="temporal_coords", shape=["batch", spec.time.steps, 2],
               description="year and day of year (1-366) of each step's acquisition"),
        Tensor(name="location_coords", shape=["batch", 2], description="latitude, longitude of the chip centre"),
    ] if coordinates else [])
    outputs = tasks.outputs(recipe)
    output = Tensor(name="logits", shape=["batch", outputs, spec.size, spec.size],
                    description="class scores per pixel (argmax: the class id; softmax: confidence)"
                    if recipe.task.kind == "segmentation" else "the predicted value per pixel (channel 0)")
    preset = preset_for(recipe.data.source)
    origin = f"preset {preset.name}: {preset.description}" if preset else "the catalogue's raster:bands"
    return Bundle(
        model="model.onnx", model_int8="model.int8.onnx" if int8 else None, int8=int8,
        model_fp16="model.fp16.onnx" if float16 else None, float16=float16, inputs=inputs,
        output=output,
        bands=bands,
        units=f"each band as the chip reader writes it: the file's value x scale + offset ({origin}; an item's "
              "raster:bands and the recipe's data.source scale/offset win), float32",
        normalization={"mean": norm["mean"], "std": norm["std"], "source": norm["source"],
                       "formula": "(value - mean[band]) / std[band]",
                       "nodata": "a pixel with no data (NaN: outside the scene, masked cloud, fill) is 0 "
                                 "after normalisation, i.e. the band mean"},
        chip={"size": spec.size, "resolution": spec.resolution, "crs": spec.crs, "steps": spec.time.steps,
              "step_days": spec.time.step_days, "tolerance_days": spec.time.tolerance_days,
              "prefer": spec.time.prefer, "mask": spec.mask.model_dump(mode="json"),
              "file": {"layout": "step-major: all bands of step 0, then all bands of step 1, ...; read (steps * "
                                 "bands, H, W), reshape to (steps, bands, H, W), transpose to (bands, steps, H, W)",
                       "band_index": "1 + step * len(bands) + band (band descriptions t<step>_<band>)",
                       "nodata": "NaN"}},
        task=recipe.task.kind, classes=classes, colours=class_colours(len(classes), recipe.task.colors),
        ignore_index=spec.label.ignore_index, coordinates=coordinates, backbone=meta["backbone"],
        depth=meta["depth"], source=recipe.data.source.model_dump(mode="json", exclude={"path"}),
        metrics=trained.get("metrics", {}), metrics_split=trained.get("metrics_split", "test"),
    ).model_dump(mode="json")

"""The `export` stage: each student to ONNX, checked against PyTorch, packed as a bundle.

bundle/ holds everything prediction needs and nothing else: model.onnx (and model.int8.onnx
when asked), bundle.json with the band list, normalisation statistics, chip spec, classes and
colours, the recipe excerpt and the metrics.
"""

from __future__ import annotations

import numpy as np
import torch

from instageo.data.quicklook import class_colours
from instageo.deploy import onnx
from instageo.errors import StageError
from instageo.files import write_json_atomic
from instageo.model import tasks
from instageo.model.specs import backbone_spec
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult
from instageo.timing import throughputs

PARITY_CHIPS = 32


FILES = {"onnx": "bundle/model.onnx", "bundle": "bundle/bundle.json"}


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """A student's bundle (the `export` stage); timed beside the teacher's ONNX model when the
    `teacher_export` stage made one (it is exported once, not per student)."""
    spec = recipe.export.onnx
    model, meta, split, sample = _load(recipe, inputs["chips"], inputs["student"])
    session, summary = _export_bundle(model, meta, sample, ctx.workdir, recipe, inputs["student"].summary)
    batch = tuple(t.numpy() for t in sample)
    runners = [lambda b: _torch(model, b), lambda b: onnx.run(session, b, len(b[0]))]
    files = dict(FILES)
    teacher_export = inputs.get("teacher_export")
    if teacher_export is not None:
        teacher = onnx.session(teacher_export.path("onnx"))
        runners.append(lambda b: onnx.run(teacher, b, len(b[0])))
    if spec.quantize:
        bundle = ctx.workdir / "bundle"
        onnx.quantize(bundle / "model.onnx", bundle / "model.int8.onnx")
        int8 = onnx.session(bundle / "model.int8.onnx")
        runners.append(lambda b: onnx.run(int8, b, len(b[0])))
        summary["int8"] = _int8_delta(session, int8, split, recipe)
        files["onnx_int8"] = "bundle/model.int8.onnx"
    # torch and ONNX timed side by side here; the student's torch_img_s (timed beside its
    # teacher) stays as the student stage measured it
    speeds = throughputs(runners, batch, len(batch[0]))
    summary["throughput"] = {"onnx_img_s": speeds[1], "onnx_vs_torch": round(speeds[1] / speeds[0], 3)}
    if teacher_export is not None:
        teacher_speed = speeds[2]
        summary["throughput"].update(teacher_onnx_img_s=teacher_speed,
                                     onnx_vs_teacher_onnx=round(speeds[1] / teacher_speed, 3))
    if spec.quantize:
        summary["throughput"].update(onnx_int8_img_s=speeds[-1], int8_vs_onnx=round(speeds[-1] / speeds[1], 3))
    return StageOutput(files=files, summary=summary)


def run_teacher(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    """The teacher's bundle (the `teacher_export` stage, when export.onnx.teacher): once per
    teacher, for its own prediction map and for the students' exports to be timed beside."""
    model, meta, _, sample = _load(recipe, inputs["chips"], inputs["teacher"])
    session, summary = _export_bundle(model, meta, sample, ctx.workdir, recipe, inputs["teacher"].summary)
    batch = tuple(t.numpy() for t in sample)
    speeds = throughputs([lambda b: _torch(model, b), lambda b: onnx.run(session, b, len(b[0]))], batch, len(batch[0]))
    summary["throughput"] = {"onnx_img_s": speeds[1], "onnx_vs_torch": round(speeds[1] / speeds[0], 3)}
    return StageOutput(files=dict(FILES), summary=summary)


def _load(recipe: Recipe, chips: StageResult, trained: StageResult):
    """A trained model, its meta, the split it is checked on, and the parity sample."""
    model, meta = tasks.load(trained.path("model"))
    data = tasks.splits(recipe, chips, meta["normalization"])
    split = data[next(n for n in ("test", "val", "train") if n in data)]
    return model, meta, split, split.inputs(slice(0, PARITY_CHIPS))


def _export_bundle(model, meta: dict, sample, workdir, recipe: Recipe, trained: dict):
    """bundle/model.onnx, checked against PyTorch (beyond the tolerance the stage fails), and
    bundle/bundle.json. Returns the session and the summary of the check."""
    spec = recipe.export.onnx
    (workdir / "bundle").mkdir(exist_ok=True)
    onnx.export(model, sample, workdir / FILES["onnx"], spec.opset)
    session = onnx.session(workdir / FILES["onnx"])
    check = onnx.parity(model, session, sample)
    if check["max_abs_diff"] > spec.tolerance:
        raise StageError(f"ONNX output differs from PyTorch by {check['max_abs_diff']:.2e} "
                         f"(export.onnx.tolerance {spec.tolerance:g})")
    write_json_atomic(workdir / FILES["bundle"], _bundle(recipe, meta, trained))
    return session, {"onnx": "@onnx", "onnx_max_abs_diff": round(check["max_abs_diff"], 9),
                     "onnx_argmax_agreement": check["argmax_agreement"]}


def _torch(model, batch: tuple[np.ndarray, ...]):
    with torch.no_grad():
        return model(*(torch.from_numpy(array) for array in batch))


def _int8_delta(session, int8, split, recipe: Recipe) -> dict:
    """Test-split metric of the int8 model, and its change against the float model."""
    from instageo.model.metrics import regression_metrics, segmentation_metrics

    chips = tuple(t.numpy() for t in split.inputs())
    outputs = [onnx.run(s, chips) for s in (session, int8)]
    if tasks.regression(recipe):
        labelled = ~np.isnan(split.y.numpy())
        scores = [regression_metrics(o[:, 0][labelled], split.y.numpy()[labelled])["rmse"] for o in outputs]
        return {"rmse": scores[1], "delta_rmse": round(scores[1] - scores[0], 6)}
    labelled = split.y.numpy() != recipe.data.chips.label.ignore_index
    truth = split.y.numpy()[labelled]
    scores = [segmentation_metrics(o.argmax(1)[labelled], truth, tasks.outputs(recipe))["miou"] for o in outputs]
    return {"miou": scores[1], "delta_miou": round(scores[1] - scores[0], 6)}


def _bundle(recipe: Recipe, meta: dict, student: dict) -> dict:
    spec = recipe.data.chips
    classes = list(recipe.task.classes)
    norm = meta["normalization"]
    coordinates = backbone_spec(meta["backbone"]).coords
    return {
        "format": "instageo-bundle/1",
        "model": "model.onnx",
        "input": "chips: (batch, bands, steps, height, width) float32, normalised as below, nodata as 0"
                 + ("; temporal_coords: (batch, steps, 2) float32 year, day of year of each step; "
                    "location_coords: (batch, 2) float32 lat, lon of the chip centre" if coordinates else ""),
        "coordinates": coordinates,
        "bands": list(spec.bands), "mean": norm["mean"], "std": norm["std"],
        "normalization": norm["source"],
        "chip": {"size": spec.size, "resolution": spec.resolution, "crs": spec.crs,
                 "steps": spec.time.steps, "step_days": spec.time.step_days,
                 "tolerance_days": spec.time.tolerance_days, "prefer": spec.time.prefer,
                 "mask": spec.mask.model_dump(mode="json")},
        "task": recipe.task.kind, "classes": classes,
        "colours": class_colours(len(classes), recipe.task.colors),
        "backbone": meta["backbone"], "depth": meta["depth"],
        "source": recipe.data.source.model_dump(mode="json", exclude={"path"}),
        "metrics": student.get("metrics", {}),
    }

"""The `speed` stage: one throughput measurement for every model of a run.

The teacher and every student, in PyTorch and in ONNX (and int8 when exported), are timed in
one process on the same batch of test chips, in alternation, over several rounds; the report
takes every chips/s, speed-up and the sweep plot from here and nowhere else, so its columns
cannot contradict each other. It gathers the `export` stage of every variant (a stage that
reads all variants: `Stage.gather`). Variants whose chips differ (a sweep over the chip
size) are timed in groups, each against its own teacher. It writes no files (a teacher
without a bundle is exported to ONNX for the timing and the file removed).
"""

from __future__ import annotations

import numpy as np
import torch

from instageo.deploy import onnx
from instageo.model import tasks
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageContext, StageOutput, StageResult
from instageo.timing import paired_speedup, round_seconds, summary

BATCH = 16
ROUNDS = 9
LEAST_SECONDS = 0.2  # per model per round: a tiny model's single call is mostly timer noise


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    by_variant: dict[str, dict[str, StageResult]] = {}
    for name, result in inputs.items():
        need, _, variant = name.partition("@")
        by_variant.setdefault(variant, {})[need] = result
    groups: dict[str, list[str]] = {}  # chips key -> variants
    for variant, needs in by_variant.items():
        groups.setdefault(needs["chips"].key, []).append(variant)
    variants: dict[str, dict] = {}
    for members in groups.values():
        variants.update(_time_group(recipe, {v: by_variant[v] for v in members}, ctx))
    return StageOutput(summary={"speed": {"batch": BATCH, "rounds": ROUNDS, "device": "cpu",
                                          "threads": torch.get_num_threads(), "variants": variants}})


def _time_group(recipe: Recipe, members: dict[str, dict[str, StageResult]], ctx: StageContext) -> dict:
    first = next(iter(members.values()))
    teacher, meta = tasks.load(first["teacher"].path("model"))
    data = tasks.splits(recipe, first["chips"], meta["normalization"])
    split = data[next(n for n in ("test", "val", "train") if n in data)]
    repeats = BATCH // len(split) + 1
    batch = tuple(torch.cat([t] * repeats)[:BATCH].numpy() for t in split.inputs(slice(0, BATCH)))
    models: dict[str, dict[str, object]] = {"teacher": {"torch": teacher}}  # label -> runtime -> model
    if "teacher_export" in first:
        models["teacher"]["onnx"] = onnx.session(first["teacher_export"].path("onnx"))
    else:  # exported here only to be timed (the run did not ask for the teacher's bundle)
        path = ctx.workdir / "teacher-timing.onnx"
        onnx.export(teacher, tuple(torch.from_numpy(a) for a in batch), path, recipe.export.onnx.opset)
        models["teacher"]["onnx"] = onnx.session(path)
        path.unlink()
    depth_of = {"teacher": meta["depth"]}
    for variant, needs in members.items():
        student, student_meta = tasks.load(needs["student"].path("model"))
        models[variant] = {"torch": student, "onnx": onnx.session(needs["export"].path("onnx"))}
        if "onnx_int8" in needs["export"].files:
            models[variant]["int8"] = onnx.session(needs["export"].path("onnx_int8"))
        depth_of[variant] = student_meta["depth"]
    labels = [(label, runtime) for label, runtimes in models.items() for runtime in runtimes]
    ctx.log.info("timing %d model(s) on %d chips, %d rounds, in alternation", len(labels), BATCH, ROUNDS)
    seconds = dict(zip(labels, round_seconds([_runner(models[l][r]) for l, r in labels], batch, ROUNDS,
                                             LEAST_SECONDS)))
    speeds = {label: summary(times, BATCH) for label, times in seconds.items()}
    out = {}
    for variant in members:
        entry = {"depth": depth_of[variant], "same_as_teacher": depth_of[variant] == depth_of["teacher"]}
        for runtime in models[variant]:
            entry[runtime] = speeds[(variant, runtime)]
            against = "onnx" if runtime == "int8" else runtime  # int8 against the float teacher
            base = speeds.get(("teacher", against))
            if base is not None:
                entry[f"teacher_{against}"] = base
                entry[f"speedup_{runtime}"] = paired_speedup(seconds[(variant, runtime)], seconds[("teacher", against)])
        out[variant] = entry
    return out


def _runner(model):
    if isinstance(model, torch.nn.Module):
        model.eval()

        def run_torch(batch):
            with torch.no_grad():
                return model(*(torch.from_numpy(np.ascontiguousarray(a)) for a in batch))
        return run_torch
    return lambda batch: onnx.run(model, batch, len(batch[0]))

"""Test-only stages that prove the runner: deterministic, resumable, and cheap.

They write files derived from their config and inputs, so outputs change exactly when the
stage's cache key should. ``FAKE_STAGE_SLEEP`` (seconds) slows `prepare`, or the stage named
by ``FAKE_SLOW_STAGE``, so a test can kill or interrupt it midway.
"""

import hashlib
import json
import os
import time

from instageo.files import canonical_json, write_bytes_atomic
from instageo.runner import Stage, StageOutput

ITEMS = 8


def _digest(*parts) -> str:
    return hashlib.sha256(canonical_json([str(p) for p in parts]).encode()).hexdigest()


def _pause(stage: str) -> float:
    return float(os.environ.get("FAKE_STAGE_SLEEP", "0")) if os.environ.get("FAKE_SLOW_STAGE", "prepare") == stage else 0


def prepare(recipe, inputs, ctx):
    pause = _pause("prepare")
    for index in ctx.track(range(ITEMS), description="items"):
        item = ctx.workdir / f"item-{index}.json"
        if item.exists():  # resume: finished items are kept across a kill
            continue
        time.sleep(pause)
        value = _digest(recipe.data.chips.size, recipe.data.source, index)
        write_bytes_atomic(item, json.dumps({"index": index, "value": value}).encode())
    files = {f"item{i}": f"item-{i}.json" for i in range(ITEMS)}
    return StageOutput(files, {"chips": ITEMS, "skipped": {"cloudy": 0}})


def fit(recipe, inputs, ctx):
    items = [inputs["prepare"].path(f"item{i}").read_text() for i in range(ITEMS)]
    weights = _digest(*items, recipe.teacher.train.lr, recipe.seed)
    (ctx.workdir / "teacher.json").write_text(json.dumps({"weights": weights}))
    return StageOutput({"model": "teacher.json"}, {"metrics": {"miou": 0.5}})


def distill(recipe, inputs, ctx):
    teacher = inputs["fit"].path("model").read_text()
    if _pause("distill"):
        (ctx.workdir / "started").touch()  # a test waits for it, then interrupts
        time.sleep(_pause("distill"))
    weights = _digest(teacher, recipe.student.depth, recipe.student.distill.alpha)
    (ctx.workdir / "student.json").write_text(json.dumps({"weights": weights}))
    return StageOutput({"model": "student.json"}, {"params": 1000 * recipe.student.depth})


def package(recipe, inputs, ctx):
    student = inputs["distill"].path("model").read_bytes()
    (ctx.workdir / "bundle.bin").write_bytes(student + str(recipe.export.onnx.opset).encode())
    return StageOutput({"bundle": "bundle.bin"}, {"onnx": "bundle.bin"})


def broken(recipe, inputs, ctx):
    (ctx.workdir / "half.bin").write_bytes(b"half")
    raise RuntimeError("simulated failure")


def noisy(recipe, inputs, ctx):
    """What onnxruntime's quantiser does: a warning on the root logger, and a Python warning."""
    import logging
    import warnings

    logging.warning("a library's warning on the root logger")
    warnings.warn("a library's RuntimeWarning", RuntimeWarning, stacklevel=1)
    ctx.log.info("noisy: our own line")
    return StageOutput({}, {})


PIPELINE = [
    Stage("prepare", prepare, ("data.source", "data.chips"), report_into="dataset"),
    Stage("fit", fit, ("teacher", "seed"), needs=("prepare",), report_into="teacher"),
    Stage("distill", distill, ("student",), needs=("fit",), report_into="variant"),
    Stage("package", package, ("export.onnx",), needs=("distill",)),
]

BROKEN_PIPELINE = PIPELINE[:2] + [Stage("distill", broken, ("student",), needs=("fit",))]
NOISY_PIPELINE = PIPELINE[:1] + [Stage("noisy", noisy, ("teacher",), needs=("prepare",))]
BROKEN_FOURTH = PIPELINE[:3] + [Stage("package", broken, ("export.onnx",), needs=("distill",))]

"""The `teacher` stage: fine-tune a Prithvi-style encoder + head on the chips."""

from __future__ import annotations

import logging
from pathlib import Path

from instageo.model import tasks
from instageo.model.checkpoint import load_encoder
from instageo.model.network import PixelModel
from instageo.recipe.backbones import backbone_spec
from instageo.model.train import fit, seed_everything
from instageo.recipe.models import Recipe
from instageo.runner import ranks
from instageo.runner.stage import StageContext, StageOutput, StageResult


def run(recipe: Recipe, inputs: dict[str, StageResult], ctx: StageContext) -> StageOutput:
    chips, teacher = inputs["chips"], recipe.teacher
    norm = tasks.normalization(recipe, chips)
    data = tasks.splits(recipe, chips, norm)
    spec = backbone_spec(teacher.backbone)
    seed_everything(recipe.seed)
    meta = {"backbone": teacher.backbone, "in_chans": len(recipe.data.chips.bands),
            "frames": recipe.data.chips.time.steps, "outputs": tasks.outputs(recipe),
            "head": teacher.head, "depth": spec.depth, "bands": list(recipe.data.chips.bands),
            "normalization": norm}
    model = initial_model(meta, teacher.weights, ctx.log)
    result = fit(model, data, teacher.train, tasks.supervised_loss(recipe, chips), tasks.val_score(recipe),
                 recipe.seed, ctx.workdir, ctx.bar, ctx.log)
    model.load_state_dict(result.state)
    if ranks.is_main():  # under accelerate launch the other processes write nothing
        tasks.save(ctx.workdir / "teacher.pt", model, meta)
        (ctx.workdir / "train_state.pt").unlink(missing_ok=True)  # only needed to resume
    evaluation = tasks.summary(model, data, recipe, teacher.train.batch_size)
    return StageOutput(
        files={"model": "teacher.pt"},
        summary={"backbone": teacher.backbone, "depth": spec.depth, "weights": None if teacher.weights is None
                 else teacher.weights.name, "normalization": norm, **evaluation,
                 "best_epoch": result.best_epoch, "precision": result.precision, "processes": result.processes,
                 "history": result.history,
                 "baselines": tasks.baselines(recipe, data, norm)},
    )


def initial_model(meta: dict, weights: Path | None, log: logging.Logger) -> PixelModel:
    """The teacher before fine-tuning: the backbone with ``weights`` loaded, if any."""
    model = tasks.build(meta)
    if weights is not None:
        loaded = load_encoder(model.encoder, weights, meta["bands"])
        log.info("loaded %d tensors from %s", len(loaded.kept), weights)
        if loaded.unused:
            log.warning("%s: %s not used: backbone %s has no temporal/location encoders (its _tl "
                        "variant has)", weights, ", ".join(loaded.unused), meta["backbone"])
    return model

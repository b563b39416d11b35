"""What teacher and student stages share: data, losses, the evaluation summary, checkpoints."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch.nn import functional as F

from instageo.data.chips import read_index
from instageo.model.budget import check_training_memory
from instageo.model.data import Split, load_splits, train_stats
from instageo.model.network import PixelModel
from instageo.recipe.backbones import backbone_spec
from instageo.model.train import batch_mean, cost, evaluate, score
from instageo.recipe.models import Recipe
from instageo.runner.stage import StageResult


def regression(recipe: Recipe) -> bool:
    return recipe.task.kind == "regression"


def outputs(recipe: Recipe) -> int:
    return 1 if regression(recipe) else len(recipe.task.classes)


def normalization(recipe: Recipe, chips: StageResult) -> dict:
    """The band means and stds every model of the run sees (teacher, students, bundle).

    With ``teacher.weights`` and ``teacher.normalize: pretrained`` (the default), a band the
    backbone was pretrained on gets its pretraining statistics, so the inputs match what the
    weights learnt; any other band (and every band when training from scratch, or with
    ``normalize: chips``) gets the chips' train-split statistics. ``source`` says which, by band.
    """
    stats, spec, teacher = train_stats(chips.dir), backbone_spec(recipe.teacher.backbone), recipe.teacher
    pretrained = teacher.weights is not None and teacher.normalize == "pretrained" and spec.mean is not None
    mean, std, source = [], [], {}
    for index, band in enumerate(recipe.data.chips.bands):
        if pretrained and band in spec.bands:
            at = spec.bands.index(band)
            mean.append(spec.mean[at]), std.append(spec.std[at])
            source[band] = "pretrained"
        else:
            mean.append(stats["mean"][index]), std.append(stats["std"][index])
            source[band] = "chips"
    return {"mean": mean, "std": std, "source": source}


def splits(recipe: Recipe, chips: StageResult, norm: dict) -> dict[str, Split]:
    """The chips as tensors, per split, normalised with ``norm`` (see ``normalization``)."""
    chips_spec = recipe.data.chips
    rows = read_index(chips.path("index"))
    check_training_memory(recipe, sum(row["split"] in ("train", "val", "test") for row in rows), "built")
    return load_splits(chips.dir, chips_spec.time.steps, list(chips_spec.bands), regression(recipe),
                       norm["mean"], norm["std"])


def supervised_loss(recipe: Recipe, chips: StageResult):
    """Cross-entropy with the chips stage's class weights (or MSE for regression), the mean
    over the labelled pixels of the whole batch (train.batch_mean: under several processes too)."""
    ignore = recipe.data.chips.label.ignore_index
    if regression(recipe):
        def squared(out, y, valid, inputs):
            labelled = ~torch.isnan(y)
            return batch_mean(((out[:, 0][labelled] - y[labelled]) ** 2).sum(), labelled.sum())

        return squared
    stats = json.loads(chips.path("stats").read_text())
    weights = torch.tensor(stats["class_weights"], dtype=torch.float32)
    weights = torch.where(weights > 0, weights, torch.ones_like(weights))

    def loss(out, y, valid, inputs):  # F.cross_entropy's weighted mean: sum(w_y * nll) / sum(w_y)
        w = weights.to(out.device)
        weighted = F.cross_entropy(out.float(), y, weight=w, ignore_index=ignore, reduction="sum")
        labelled = y != ignore
        return batch_mean(weighted, w[y[labelled]].sum())

    return loss


def val_score(recipe: Recipe):
    ignore = recipe.data.chips.label.ignore_index
    return lambda model, split: score(evaluate(model, split, outputs(recipe), ignore, regression(recipe), 32))


def summary(model: PixelModel, data: dict[str, Split], recipe: Recipe, batch_size: int) -> dict:
    """Test metrics (val, then train, when the split is empty), reported; val metrics, which
    the report chooses students by; parameters and GFLOPs. (Speed is measured once for all
    models, side by side, by the `speed` stage.)"""
    name = next(n for n in ("test", "val", "train") if n in data)
    split = data[name]

    def metrics_on(part: Split) -> dict:
        return evaluate(model, part, outputs(recipe), recipe.data.chips.label.ignore_index,
                        regression(recipe), batch_size)

    metrics = {**metrics_on(split), "chips": len(split)}
    chosen_on = {"val_metrics": {**metrics_on(data["val"]), "chips": len(data["val"])}} if "val" in data else {}
    sample = split.inputs(slice(0, batch_size))
    return {"metrics": metrics, "metrics_split": name, **chosen_on, **cost(model, sample)}


def baselines(recipe: Recipe, data: dict[str, Split], norm: dict) -> dict:
    """The baselines of ``instageo.model.baselines`` on this recipe's splits."""
    from instageo.model.baselines import baselines as compute

    return compute(data, list(recipe.data.chips.bands), norm["mean"], norm["std"], outputs(recipe),
                   recipe.data.chips.label.ignore_index, regression(recipe))


def build(meta: dict) -> PixelModel:
    return PixelModel(backbone_spec(meta["backbone"]), meta["in_chans"], meta["frames"], meta["outputs"],
                      meta["head"], meta["depth"])


def save(path: Path, model: PixelModel, meta: dict) -> None:
    with open(path, "wb") as handle:  # torch keeps a failed Python write (disk full) as the cause
        torch.save({"meta": meta, "state": model.state_dict()}, handle)


def load(path: Path) -> tuple[PixelModel, dict]:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    model = build(saved["meta"])
    model.load_state_dict(saved["state"])
    return model, saved["meta"]

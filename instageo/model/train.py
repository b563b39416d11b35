"""The training loop shared by the teacher and the students.

accelerate picks the device (CPU here; one or many GPUs, with bf16, elsewhere) without the
recipe changing. AdamW with a linear warm-up then cosine decay; early stopping on the
validation score averaged over the last ``smooth`` epochs (the val split only: test is
never looked at), the best weights kept; a checkpoint after every epoch so a killed run
resumes at the next epoch with the same random state (same result as an uninterrupted run).
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from instageo.model.data import Split, augment
from instageo.model.metrics import regression_metrics, segmentation_metrics
from instageo.recipe.models import TrainSpec

# loss(model output, labels, validity, model inputs (x, temporal, location)) -> scalar
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, tuple], torch.Tensor]


@dataclass
class FitResult:
    state: dict
    best_epoch: int
    best_score: float
    history: list[dict] = field(default_factory=list)
    precision: str = "fp32"  # what training ran in: fp32, or bf16 mixed precision
    processes: int = 1  # data-parallel processes (accelerate launch --num_processes)


def batch_mean(total: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """``total / count`` over the whole batch, whichever process holds which part of it. DDP
    averages the N processes' gradients, so each process's share of the sum goes over the
    count of all N, times N: the averaged gradient is then the single process's. (Each
    averaging its own mean would weigh a chip by how few labelled pixels its shard has:
    with point labels, shards differ a lot.) An empty batch gives 0, not NaN."""
    count = count.detach().to(total.dtype)
    scale = 1
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        count = count.clone()
        torch.distributed.all_reduce(count)
        scale = torch.distributed.get_world_size()
    return total / count.clamp(min=1e-12) * scale


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX), from the kernel's
    /proc/cpuinfo flags; elsewhere (macOS, Windows) assumed not."""
    try:
        with open("/proc/cpuinfo") as handle:
            flags = next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


# On a CPU, bf16 pays only when the matrices are wide enough for its kernels (AMX tiles) to
# outweigh the casts. A training step here (2 cores, AMX), bf16 vs fp32: embed dim 64 (the CI
# backbone) 0.89x; 256 at 224 px 1.48x; 768 at 224 px 1.62x, at 64 px x 3 frames 1.10x.
CPU_BF16_MIN_WIDTH = 256


def resolve_precision(requested: str, width: int) -> str:
    """'bf16' or 'fp32' for a TrainSpec.precision, on this machine, for an encoder of
    ``width`` (embedding dimension)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_bf16() and width >= CPU_BF16_MIN_WIDTH else "fp32"


def encoder_width(model: nn.Module) -> int:
    """The encoder's embedding dimension (0 for a model without one)."""
    encoder = getattr(model, "encoder", None)
    return encoder.spec.embed_dim if encoder is not None else 0


def accelerator():
    from accelerate import Accelerator

    return Accelerator(cpu=not torch.cuda.is_available())


def autocast(device: torch.device, precision: str):
    """bf16 mixed precision (no grad scaler needed) around the forward pass, or nothing. Ours,
    not accelerate's: its precision is fixed per process, and teacher and students may differ."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def fit(model: nn.Module, splits: dict[str, Split], spec: TrainSpec, loss_fn: LossFn,
        score_fn: Callable[[nn.Module, Split], float], seed: int, workdir: Path, bar, log) -> FitResult:
    """Train with early stopping on ``score_fn`` over val; resumable per epoch from workdir.
    ``bar(description, total)`` makes the progress bar (``Progress.bar``): it counts batches,
    so its ETA comes from the work, and notes each epoch's loss and validation score.

    Under ``accelerate launch`` with N processes each takes every N-th chip of each batch
    (the batches, their order and their augmentation are the single process's: every process
    draws them from the same generator) and DDP averages the gradients; every process scores val itself (the
    replicas are identical), so all stop at the same epoch; only rank 0 writes. Losses take
    their means over the whole batch (``batch_mean``), so the steps are the single process's
    up to rounding."""
    train = splits["train"]
    check = splits.get("val") or train
    precision = resolve_precision(spec.precision, encoder_width(model))
    acc = accelerator()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    per_epoch = math.ceil(len(train) / spec.batch_size)
    total, warmup = spec.epochs * per_epoch, spec.warmup_epochs * per_epoch

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(total - warmup, 1)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    model, optimizer = acc.prepare(model, optimizer)
    averaged = _averaged(acc.unwrap_model(model), spec.ema)
    kept = (lambda: averaged.module) if averaged is not None else (lambda: acc.unwrap_model(model))
    shard = slice(acc.process_index, None, acc.num_processes)
    state_path = workdir / "train_state.pt"
    start, best, waited = 0, None, 0
    result = FitResult(copy.deepcopy(kept().state_dict()), -1, -math.inf)
    if state_path.exists():  # resume after an interruption, exactly where the last epoch ended
        saved = torch.load(state_path, map_location="cpu", weights_only=False)
        acc.unwrap_model(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        if averaged is not None:
            averaged.load_state_dict(saved["averaged"])
        start, waited = saved["epoch"] + 1, saved["waited"]
        result = FitResult(saved["best_state"], saved["best_epoch"], saved["best_score"], saved["history"])
        log.info("resuming training at epoch %d", start + 1)
    progress = bar(f"epochs {start + 1}-{spec.epochs} (batches)", (spec.epochs - start) * per_epoch)
    for epoch in range(start, spec.epochs):
        if waited >= spec.patience:
            log.info("epoch %d: stopping, no better val score for %d epochs", epoch + 1, waited)
            break
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for first in range(0, len(train), spec.batch_size):
            index = order[first:first + spec.batch_size]
            x, y, valid = train.x[index], train.y[index], train.valid[index]
            if spec.augment:
                x, y, valid = augment(x, y, valid, generator, spec.mosaic)
            own = shard if len(index) >= acc.num_processes else slice(None)  # a last batch too small to share
            inputs = tuple(t[own].to(acc.device) for t in (x, train.temporal[index], train.location[index]))
            y, valid = y[own].to(acc.device), valid[own].to(acc.device)
            with autocast(acc.device, precision):
                loss = loss_fn(model(*inputs), y, valid, inputs)
            acc.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            if averaged is not None:
                averaged.update_parameters(acc.unwrap_model(model))
            losses.append(float(acc.reduce(loss.detach(), "mean")))
            progress.step()
        raw = score_fn(kept(), check)
        window = [h["val_score"] for h in result.history[-(spec.smooth - 1):]] if spec.smooth > 1 else []
        score = float(np.mean(window + [raw]))
        result.history.append({"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 6),
                               "val_score": round(raw, 6), "val_smoothed": round(score, 6),
                               "seconds": round(time.perf_counter() - started, 2)})
        chosen = epoch + 1 >= min(spec.smooth, spec.epochs)  # a full window (or the last epoch)
        if chosen and score > result.best_score:
            result.best_score, result.best_epoch, waited = score, epoch + 1, 0
            result.state = copy.deepcopy(kept().state_dict())
        elif chosen:
            waited += 1
        if acc.is_main_process:
            _save(state_path, {
                "model": acc.unwrap_model(model).state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "epoch": epoch,
                "waited": waited, "best_state": result.state, "best_epoch": result.best_epoch,
                "best_score": result.best_score, "history": result.history,
                "averaged": averaged.state_dict() if averaged is not None else None,
            })
        smoothed = f", smoothed {score:.4f}" if spec.smooth > 1 else ""
        best = f"best {result.best_score:.4f} at epoch {result.best_epoch}" if result.best_epoch > 0 else "no best yet"
        line = f"epoch {epoch + 1}/{spec.epochs}: loss {np.mean(losses):.4f}, val {raw:.4f}{smoothed} ({best})"
        progress.note(line)
        log.info("%s, %.1fs", line, result.history[-1]["seconds"])
    progress.close()
    result.precision, result.processes = precision, acc.num_processes
    return result


def _averaged(model: nn.Module, decay: float):
    """torch's exponential moving average of ``model``'s weights and buffers (BatchNorm's
    statistics too), or None when ``decay`` is 0."""
    if not decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _save(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:  # torch keeps a failed Python write (disk full) as the cause
        torch.save(value, handle)
    os.replace(tmp, path)


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int) -> torch.Tensor:
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    for first in range(0, len(split), batch_size):
        out = model(*(t.to(device) for t in split.inputs(slice(first, first + batch_size))))
        outputs.append((out[0] if isinstance(out, tuple) else out).float().cpu())  # (output, extras)
    return torch.cat(outputs)


def evaluate(model: nn.Module, split: Split, classes: int, ignore_index: int, regression: bool,
             batch_size: int) -> dict:
    output = predict(model, split, batch_size)
    if regression:
        labelled = ~torch.isnan(split.y)
        return regression_metrics(output[:, 0][labelled].numpy(), split.y[labelled].numpy())
    labelled = split.y != ignore_index
    pred = output.argmax(1)[labelled].numpy()
    truth = split.y[labelled].numpy()
    scores = torch.softmax(output, 1)[:, 1][labelled].numpy() if classes == 2 else None
    return segmentation_metrics(pred, truth, classes, scores)


def score(metrics: dict) -> float:
    """Higher is better: mIoU for segmentation, -RMSE for regression."""
    return metrics["miou"] if "miou" in metrics else -metrics["rmse"]


def cost(model: nn.Module, sample: tuple[torch.Tensor, ...]) -> dict:
    """Parameters and GFLOPs per chip, for model inputs ``sample``."""
    return {"params": sum(p.numel() for p in model.parameters()),
            "gflops": round(flops(model, *(t[:1] for t in sample)) / 1e9, 6)}


def flops(module: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of one forward pass (2 per multiply-add), by torch's FLOP counter, with the
    attention kernel counted: on CPU, scaled_dot_product_attention dispatches to
    ``_scaled_dot_product_flash_attention_for_cpu``, for which torch has no formula (it
    counted 0, 11% short on the teacher), so it gets the formula of the other SDPA kernels."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_attention(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)

    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_attention}
    module.eval()
    counter = FlopCounterMode(display=False, custom_mapping=mapping)
    with torch.no_grad(), counter:
        module(*inputs)
    return counter.get_total_flops()

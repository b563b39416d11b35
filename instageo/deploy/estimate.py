"""`instarun plan --estimate`: what a run would read and compute, before it runs.

Counts come from the search stage (cached, or run now: it is cheap, it honours the lock
file, and the run reuses it): items, observations (at most one chip each), the chips' bytes
to read and, exactly, the tiles of every prediction area. Times are measured here, now: one
training step of each model (its real architecture, a synthetic batch of the recipe's shape)
times the steps the recipe asks for, plus the val passes; one forward pass per tile for the
prediction. What is not measured is said: reading time (it is the catalogue's latency),
export and the viewer (seconds). `python -m bench estimate` compares with a measured run.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

from instageo.errors import InputError
from instageo.runner.plan import Decision
from instageo.runner.stage import StageResult

TIMED_STEPS = 2  # after one warm-up step


@dataclass
class Row:
    stage: str
    variants: str
    cached: bool
    work: str
    seconds: float | None = None


def estimate(decisions: list[Decision], search: StageResult) -> list[Row]:
    """One row per planned stage: its work in counts and, for training and prediction, the
    seconds measured now on this machine (none for a cached stage: nothing to do)."""
    items = json.loads(search.path("items").read_text())
    with open(search.path("observations"), newline="") as handle:
        observations = list(csv.DictReader(handle))
    timer = _Timer()
    rows = []
    for decision in decisions:
        planned = decision.planned
        recipe, name = planned.recipe, planned.name
        row = Row(name, ", ".join(planned.variants), decision.cached, "")
        chips = recipe.data.chips
        shares = _split_shares(recipe)
        count = len(observations)
        if name == "search":
            row.work = f"{len(items)} items, {count} observations"
        elif name == "chips":
            row.work = (f"at most {count} chips of {chips.time.steps} steps x {len(chips.bands)} bands x "
                        f"{chips.size} px; reads at most {_read_bytes(items, search, recipe, count)}")
        elif name == "teacher":
            train, val = (math.ceil(count * shares[s]) for s in ("train", "val"))
            row.seconds = timer.training(recipe, None, train, val)
            row.work = (f"{recipe.teacher.train.epochs} epochs x {train} train chips, val {val} each epoch; "
                        f"{timer.last}")
        elif name == "student":
            train, val = (math.ceil(count * shares[s]) for s in ("train", "val"))
            row.seconds = timer.training(recipe, recipe.student.depth, train, val)
            row.work = (f"depth {recipe.student.depth}: {recipe.student.train.epochs} epochs x {train} train chips "
                        f"with the teacher's forward pass; {timer.last}")
        elif name in ("predict", "teacher_predict"):
            tiles = _tiles(recipe, search)
            depth = recipe.student.depth if name == "predict" else None
            row.seconds = timer.prediction(recipe, depth, tiles)
            row.work = f"{tiles:,} tiles of {chips.size} px (overlap {recipe.export.predict.overlap:g}); {timer.last}"
        else:
            row.work = "not estimated (seconds)"
        if decision.cached:
            row.seconds = None
        rows.append(row)
    return rows


def rows_text(rows: list[Row]) -> list[str]:
    lines = []
    for row in rows:
        when = "cached" if row.cached else (f"~{row.seconds:,.1f} s" if row.seconds is not None else "")
        variants = f" [{row.variants}]" if row.variants and row.variants != "default" else ""
        lines.append(f"  {row.stage}{variants}: {row.work}" + (f" -> {when}" if when else ""))
    total = sum(r.seconds for r in rows if r.seconds is not None)
    lines.append(f"  measured compute to run: ~{total:,.1f} s on this machine (reading time not included)")
    return lines


def _split_shares(recipe) -> dict[str, float]:
    """The fractions of chips per split (a named held-out set counts as a fifth, a guess)."""
    split = recipe.data.split
    val = split.val if isinstance(split.val, float) else 0.2
    test = split.test if isinstance(split.test, float) else 0.2
    return {"train": max(1 - val - test, 0.0), "val": val, "test": test}


def _tiles(recipe, search: StageResult) -> int:
    from instageo.deploy.predict import areas_of
    from instageo.engine.tiling import TileSpec, area_grids

    spec = TileSpec.of_recipe(recipe)
    return sum(len(area_grids(spec, area)) for area in areas_of(recipe, search))


def _read_bytes(items: dict, search: StageResult, recipe, chips: int) -> str:
    """Per chip and step, the mask and every band, as the blocks of the COGs a chip window
    touches (on average (size / block + 1)^2 of them), uncompressed: an upper bound (the
    compressed blocks are what travel). The block size and data type are one asset's."""
    size, steps, bands = recipe.data.chips.size, recipe.data.chips.time.steps, len(recipe.data.chips.bands)
    block, itemsize = _block_of(items, search)
    if block is None:
        per_read = size * size * 2
        how = "uint16 windows (an asset's blocks could not be read)"
    else:
        touched = (size / block[0] + 1) * (size / block[1] + 1)
        per_read = touched * block[0] * block[1] * itemsize
        how = f"{block[0]} x {block[1]} px blocks of {itemsize}-byte pixels, uncompressed"
    total = chips * steps * (bands + 1) * per_read
    return f"{_human(total)} ({how})"


def _block_of(items: dict, search: StageResult) -> tuple[tuple[int, int] | None, int]:
    import numpy as np
    import rasterio

    try:
        first = next(iter(items.values()))
        href = next(iter(first["bands"].values()))["href"]
        path = href if "://" in href else str(search.dir / href)
        with rasterio.open(path) as dataset:
            return dataset.block_shapes[0], np.dtype(dataset.dtypes[0]).itemsize
    except Exception:  # a signed or unreachable asset: say so, estimate without it
        return None, 2


def _human(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            break
        count /= 1024
    return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"


class _Timer:
    """Seconds per training step and per forward pass of the recipe's models, measured once
    per model shape."""

    def __init__(self):
        self.cache: dict = {}
        self.last = ""

    def _models(self, recipe, depth: int | None):
        from instageo.model import tasks
        from instageo.model.network import cut_student
        from instageo.recipe.backbones import backbone_spec

        chips = recipe.data.chips
        meta = {"backbone": recipe.teacher.backbone, "in_chans": len(chips.bands), "frames": chips.time.steps,
                "outputs": tasks.outputs(recipe), "head": recipe.teacher.head,
                "depth": backbone_spec(recipe.teacher.backbone).depth}
        teacher = tasks.build(meta)
        student = cut_student(teacher, depth, copy_head=recipe.student.head == "copy") if depth else None
        return teacher, student

    def _batch(self, recipe, size: int):
        import torch

        chips = recipe.data.chips
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(size, len(chips.bands), chips.time.steps, chips.size, chips.size, generator=generator)
        y = torch.randint(0, max(len(recipe.task.classes), 1), (size, chips.size, chips.size), generator=generator)
        return x, y

    def _step_seconds(self, recipe, depth: int | None, batch_size: int) -> tuple[float, float]:
        """(seconds per training step, seconds per chip of a forward pass)."""
        import torch
        from torch.nn import functional as F

        key = (recipe.teacher.backbone, recipe.teacher.head, depth, batch_size, recipe.data.chips.size,
               len(recipe.data.chips.bands), recipe.data.chips.time.steps)
        if key in self.cache:
            return self.cache[key]
        teacher, student = self._models(recipe, depth)
        model = student or teacher
        for parameter in model.parameters():  # a cut student shares the teacher's frozen flags
            parameter.requires_grad_(True)
        x, y = self._batch(recipe, batch_size)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        teacher.eval()

        def step():
            out = model(x)
            loss = F.cross_entropy(out, y)
            if student is not None:  # distillation: the teacher's forward pass too
                with torch.no_grad():
                    target = teacher(x)
                loss = loss + (out - target).pow(2).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        model.train()
        step()
        started = time.perf_counter()
        for _ in range(TIMED_STEPS):
            step()
        per_step = (time.perf_counter() - started) / TIMED_STEPS
        model.eval()
        with torch.no_grad():
            model(x)
            started = time.perf_counter()
            model(x)
            per_chip = (time.perf_counter() - started) / batch_size
        self.cache[key] = (per_step, per_chip)
        return self.cache[key]

    def training(self, recipe, depth: int | None, train: int, val: int) -> float:
        spec = (recipe.student if depth else recipe.teacher).train
        per_step, per_chip = self._step_seconds(recipe, depth, spec.batch_size)
        steps = math.ceil(train / spec.batch_size)
        self.last = f"{per_step:.3f} s per step of {spec.batch_size} (timed now)"
        return spec.epochs * (steps * per_step + val * per_chip)

    def prediction(self, recipe, depth: int | None, tiles: int) -> float:
        _, per_chip = self._step_seconds(recipe, depth, recipe.export.predict.batch_size)
        self.last = f"{per_chip * 1000:.2f} ms per tile in PyTorch (timed now; ONNX and reading differ)"
        return tiles * per_chip


def estimate_plan(decisions: list[Decision], run_dir: Path, progress) -> tuple[list[Row], str]:
    """The estimate of a plan, and where its counts came from."""
    if not any(d.planned.name == "search" for d in decisions):
        raise InputError("--estimate needs the search stage in the plan (it counts from its items)")
    search, source = search_result(decisions, run_dir, progress)
    return estimate(decisions, search), source


def search_result(decisions: list[Decision], run_dir: Path, progress) -> tuple[StageResult, str]:
    """The search stage's result, cached or run now into the cache; and which."""
    from instageo.runner.cache import RunLock, RunStore
    from instageo.runner.execute import execute

    decision = next(d for d in decisions if d.planned.name == "search")
    store = RunStore(run_dir)
    if decision.cached:
        manifest, _ = store.lookup("search", decision.planned.key)
        return store.result(manifest), "the cached search stage"
    with RunLock(run_dir):
        record = execute([decision], store, progress, publish=False)[0]
    return record.result, "the search stage, run now (cached for the run)"

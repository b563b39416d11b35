"""Whether a dataset fits in memory for training (the chips are loaded whole, as float32),
checked before any work: torch-free, so the CLI checks it at plan time."""

from __future__ import annotations

import os
from pathlib import Path

from instageo.errors import InputError

# The load holds each split twice at its peak (the decoded chips, then the stacked tensor).
PEAK_COPIES = 2


def training_bytes(recipe, chips: int) -> int:
    """Bytes the train/val/test chips take as tensors: float32 inputs (bands x steps x
    size^2), a validity mask and int64 labels per pixel."""
    spec = recipe.data.chips
    pixels = spec.size * spec.size
    return chips * pixels * (len(spec.bands) * spec.time.steps * 4 + 1 + 8)


def machine_memory() -> int:
    """Physical memory, or the container's limit when lower (cgroup v2, then v1)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def check_training_memory(recipe, chips: int, counted: str) -> None:
    """An InputError naming the fields to change when ``chips`` chips would not fit."""
    need = PEAK_COPIES * training_bytes(recipe, chips)
    have = machine_memory()
    if need > have:
        spec = recipe.data.chips
        raise InputError(
            f"data.observations: {chips:,} chips ({counted}) of {len(spec.bands)} bands x {spec.time.steps} "
            f"step(s) x {spec.size}x{spec.size} px need about {need / 2**30:,.1f} GiB to train (loaded whole, "
            f"float32); this machine has {have / 2**30:,.1f} GiB: use fewer observations, a smaller "
            "data.chips.size or fewer data.chips.time.steps")

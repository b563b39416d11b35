"""Chips as tensors: the chips stage's GeoTIFFs loaded per split, normalised, NaN-free.

Inputs are (N, C, T, H, W) float32, normalised with the given band means and stds (the
backbone's pretraining statistics or the train split's, see ``tasks.normalization``), with
nodata set to 0 (the mean) and a separate validity mask; labels (N, H, W), int64 class ids
with the ignore index, or float32 values for regression. Each chip also carries the inputs of
TL backbones: the year and day of year of each step, and its centre's lat, lon.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import torch

from instageo.data.normalise import Normaliser
from instageo.data import coordinates


@dataclass
class Split:
    x: torch.Tensor  # (N, C, T, H, W)
    valid: torch.Tensor  # (N, H, W) bool: imagery present in every step
    y: torch.Tensor  # (N, H, W)
    ids: list[str]
    temporal: torch.Tensor  # (N, T, 2): year, day of year of each step
    location: torch.Tensor  # (N, 2): lat, lon of the chip centre

    def __len__(self) -> int:
        return len(self.ids)

    def inputs(self, index=slice(None)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What a model is called with, for the chips at ``index``: (x, temporal, location)."""
        return self.x[index], self.temporal[index], self.location[index]


def train_stats(chips_dir: Path) -> dict:
    """The chips stage's band statistics of the train split (mean, std, class weights)."""
    return json.loads((chips_dir / "stats.json").read_text())


def load_splits(chips_dir: Path, steps: int, bands: list[str], regression: bool,
                mean: list[float], std: list[float]) -> dict[str, Split]:
    normalise = Normaliser(mean, std)
    with open(chips_dir / "index.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    grouped: dict[str, list] = {"train": [], "val": [], "test": []}
    for row in rows:
        if row["split"] not in grouped:
            continue
        with rasterio.open(chips_dir / row["image"]) as dataset:
            image = dataset.read().reshape(steps, len(bands), dataset.height, dataset.width)
        with rasterio.open(chips_dir / row["label"]) as dataset:
            label = dataset.read(1)
        valid = ~np.isnan(image).any(axis=(0, 1))  # image: (T, C, H, W)
        image = normalise(image)  # (C, T, H, W)
        when = coordinates.temporal(row["dates"].split(";"))
        where = coordinates.location(float(row["lon"]), float(row["lat"]))
        grouped[row["split"]].append((row["chip_id"], image, valid, label, when, where))
    splits = {}
    for name, items in grouped.items():
        if not items:
            continue
        ids, images, valids, labels, whens, wheres = zip(*items)
        y = np.stack(labels).astype(np.float32 if regression else np.int64)
        splits[name] = Split(torch.from_numpy(np.stack(images)), torch.from_numpy(np.stack(valids)),
                             torch.from_numpy(y), list(ids), torch.from_numpy(np.stack(whens)),
                             torch.from_numpy(np.stack(wheres)))
    return splits


def augment(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, generator: torch.Generator,
            mosaic: int = 1):
    """The same random flip and 90-degree rotation for every time step and the labels (one
    draw per batch: a draw per chip was tried and made 2 accelerate processes train apart from
    one, 0.016 test mIoU on tiny, for no measured gain; see bench/RESULTS.md), then, if
    ``mosaic`` > 1, the batch as a mosaic (``mosaic_cells``)."""
    turns = int(torch.randint(0, 4, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    if flip:
        x, y, valid = x.flip(-1), y.flip(-1), valid.flip(-1)
    if turns:
        x, y, valid = (torch.rot90(t, turns, dims=(-2, -1)) for t in (x, y, valid))
    if mosaic > 1:
        x, y, valid = mosaic_cells(x, y, valid, mosaic, generator)
    return x, y, valid


def mosaic_cells(x: torch.Tensor, y: torch.Tensor, valid: torch.Tensor, cells: int,
                 generator: torch.Generator):
    """Every chip cut into cells x cells squares, each square taken from a chip of the batch
    drawn for it, labels alike. A chip's overall look (its scene's backscatter level, a chip all
    water) then cannot decide its pixels: on Sen1Floods11's held-out countries this took the
    teacher from 0.63 to 0.79 test mIoU (bench/RESULTS.md). The chip's dates and place stay its own."""
    if len(x) < 2:
        return x, y, valid
    rows, cols = (torch.linspace(0, size, cells + 1).round().long().tolist() for size in x.shape[-2:])
    mixed = [t.clone() for t in (x, y, valid)]
    for top, bottom in zip(rows, rows[1:]):
        for left, right in zip(cols, cols[1:]):
            order = torch.randperm(len(x), generator=generator)
            for source, target in zip((x, y, valid), mixed):
                target[..., top:bottom, left:right] = source[order, ..., top:bottom, left:right]
    return tuple(mixed)

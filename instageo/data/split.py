"""Train / val / test splits of chips: spatial blocks (default), random, or by date.

Spatial: chips are grouped into square blocks of ``block_km`` (on an equal-area grid) and
whole blocks go to one split, so neighbouring chips, which share pixels and land cover, never
sit on both sides of the train/test line. Blocks are dealt to splits in a seeded random order
until each split holds its share of chips.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence

from instageo.data.chip_build import ChipRecord
from instageo.recipe.models import SplitSpec

EARTH_RADIUS_KM = 6371.0


def assign_splits(records: Sequence[ChipRecord], spec: SplitSpec, seed: int) -> dict[str, str]:
    """chip id -> 'train' | 'val' | 'test'."""
    records = sorted(records, key=lambda r: r.chip_id)
    if spec.method == "date":
        ordered = sorted(records, key=lambda r: (r.date, r.chip_id))
        return _deal([[r.chip_id] for r in ordered], spec, len(records), reverse=True)
    if spec.method == "random":
        groups = [[r.chip_id] for r in records]
    else:
        blocks: dict[tuple[int, int], list[str]] = defaultdict(list)
        for record in records:
            blocks[block_of(record.lon, record.lat, spec.block_km)].append(record.chip_id)
        groups = [blocks[key] for key in sorted(blocks)]
    random.Random(seed).shuffle(groups)
    splits = _deal(groups, spec, len(records))
    if spec.gap_km > 0:
        _exclude_near(records, splits, spec.gap_km)
    return splits


def _exclude_near(records: Sequence[ChipRecord], splits: dict[str, str], gap_km: float) -> None:
    """Train chips closer than ``gap_km`` to a val/test chip leave training ('excluded')."""
    held_out = [r for r in records if splits[r.chip_id] != "train"]
    for record in records:
        if splits[record.chip_id] == "train" and any(
            distance_km(record.lon, record.lat, o.lon, o.lat) < gap_km for o in held_out
        ):
            splits[record.chip_id] = "excluded"


def distance_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(a, 1.0)))


def block_of(lon: float, lat: float, block_km: float) -> tuple[int, int]:
    """Block indices on a cylindrical equal-area grid (equal-sized blocks at any latitude)."""
    x = math.radians(lon) * EARTH_RADIUS_KM
    y = math.sin(math.radians(lat)) * EARTH_RADIUS_KM
    return math.floor(x / block_km), math.floor(y / block_km)


def _deal(groups: list[list[str]], spec: SplitSpec, total: int, reverse: bool = False) -> dict[str, str]:
    """Give groups to test, then val, up to their shares; the rest to train."""
    wanted = {"test": round(spec.test * total), "val": round(spec.val * total)}
    splits: dict[str, str] = {}
    order = list(reversed(groups)) if reverse else groups
    for index, group in enumerate(order):
        last = index == len(order) - 1  # the last group always trains: train is never empty
        target = "train" if last else next((n for n in ("test", "val") if wanted[n] > 0), "train")
        for chip_id in group:
            splits[chip_id] = target
        if target != "train":
            wanted[target] -= len(group)
    return splits

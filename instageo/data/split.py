"""Train / val / test splits of chips: named sets, then fractions of the rest.

Named sets (``split.test`` / ``split.val`` given as files, regions or ids) take their chips
first, each chip by its own footprint. The rest is dealt to the fractions by ``method``:

- spatial: chips are grouped into square blocks of ``block_km`` (on an equal-area grid, by
  each chip's own centre) and whole blocks go to one split, so neighbouring chips, which
  share land cover, never sit on both sides of the train/test line;
- clusters: chips linked by chains of neighbours closer than ``block_km`` form one group
  (single linkage), so a group never borders another;
- tile: chips whose imagery comes from one satellite tile (the MGRS tile or Landsat path/row
  in the item ids) form one group;
- year: chips of one observation year form one group;
- random: chip by chip; date: the latest chips to test, then val.

Groups are dealt in a seeded random order (``split.seed``) until each split holds its share of
all chips. Then ``gap_km``: a chip closer than that, edge to edge, to a chip of a later split
(train < val < test) leaves its own ("excluded").
"""

from __future__ import annotations

import math
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from fnmatch import fnmatch
from pathlib import PurePath

from instageo.data.chip_build import ChipRecord
from instageo.data.grid import Box, boxes_touch
from instageo.errors import InputError
from instageo.recipe.models import HeldOut, SplitSpec

EARTH_RADIUS_KM = 6371.0
KM_PER_DEGREE = math.pi * EARTH_RADIUS_KM / 180
ORDER = {"train": 0, "val": 1, "test": 2}



def assign_splits(records: Sequence[ChipRecord], spec: SplitSpec, footprints: dict[str, Box],
                  sources: dict[str, str]) -> dict[str, str]:
    """chip id -> 'train' | 'val' | 'test' | 'excluded'. ``footprints``: each chip's lon/lat
    box; ``sources``: observation id -> the file it came from (label raster, polygons)."""
    records = sorted(records, key=lambda r: r.chip_id)
    splits: dict[str, str] = {}
    for name in ("test", "val"):  # a chip named by both is a test chip
        selector = getattr(spec, name)
        if isinstance(selector, HeldOut):
            taken = _named(records, selector, footprints, sources, f"data.split.{name}")
            splits.update({chip: name for chip in taken if chip not in splits})
    rest = [r for r in records if r.chip_id not in splits]
    wanted = {name: round(getattr(spec, name) * len(records)) for name in ("test", "val")
              if not isinstance(getattr(spec, name), HeldOut)}
    splits.update(_deal(_groups(rest, spec), wanted))
    if not any(split == "train" for split in splits.values()):
        raise InputError(f"data.split: val and test take all {len(records)} chips; none is left for training")
    if spec.gap_km > 0:
        _exclude_near(records, splits, footprints, spec.gap_km)
    return splits


def _named(records: Sequence[ChipRecord], selector: HeldOut, footprints: dict[str, Box],
           sources: dict[str, str], field: str) -> set[str]:
    """The chips a named set takes; a name that takes nothing is an error (a typo, most often)."""
    taken: set[str] = set()
    for pattern in selector.files:
        matched = {r.chip_id for r in records
                   if fnmatch(r.observation, pattern) or fnmatch(PurePath(sources.get(r.observation, "")).name, pattern)}
        if not matched:
            raise InputError(f"{field}.files: '{pattern}' matches no observation with chips")
        taken |= matched
    for region in selector.regions:
        matched = {r.chip_id for r in records if boxes_touch(footprints[r.chip_id], region)}
        if not matched:
            raise InputError(f"{field}.regions: {list(region)} touches no chip")
        taken |= matched
    for name in selector.ids:
        matched = {r.chip_id for r in records if name in (r.chip_id, r.observation)}
        if not matched:
            raise InputError(f"{field}.ids: '{name}' is no chip or observation with chips")
        taken |= matched
    return taken


def _groups(records: list[ChipRecord], spec: SplitSpec) -> list[list[str]]:
    """Chips dealt together, in dealing order."""
    if spec.method == "date":
        ordered = sorted(records, key=lambda r: (r.date, r.chip_id), reverse=True)
        return [[r.chip_id] for r in ordered]
    if spec.method == "random":
        groups = [[r.chip_id] for r in records]
    else:
        clusters = _clusters(records, spec.block_km) if spec.method == "clusters" else {}
        key_of = {"spatial": lambda r: block_of(r.lon, r.lat, spec.block_km), "year": lambda r: r.date[:4],
                  "tile": tile_of, "clusters": lambda r: clusters[r.chip_id]}[spec.method]
        keyed: dict = defaultdict(list)
        for record in records:
            keyed[key_of(record)].append(record.chip_id)
        groups = [keyed[key] for key in sorted(keyed)]  # one method: keys of one type
    random.Random(spec.seed).shuffle(groups)
    return groups


TILE_IDS = (r"(?<![A-Z0-9])T?(\d{2}[C-X][A-Z]{2})(?![A-Z0-9])",  # MGRS: T33UUU (Sentinel-2, HLS)
            r"^L[CEOTM]\d(\d{6})\d{7}",  # Landsat scene ids: LE7 PPPRRR YYYYDDD
            r"^L[CEOTM]\d\d_[A-Z0-9]{4}_(\d{6})_")  # Landsat product ids: LC08_L2SP_PPPRRR_


def tile_of(record: ChipRecord) -> str:
    """The satellite tile of a chip's imagery, from its first item's id (else the id)."""
    item = record.items[0] if record.items else record.chip_id
    for pattern in TILE_IDS:
        match = re.search(pattern, item)
        if match:
            return match.group(1)
    return item


def _clusters(records: Sequence[ChipRecord], link_km: float) -> dict[str, int]:
    """chip id -> cluster: chips closer than ``link_km`` (centre to centre) share a cluster,
    transitively (union-find over a grid of link_km cells, so only neighbours are compared)."""
    parent = list(range(len(records)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    cells: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        cells[block_of(record.lon, record.lat, link_km)].append(index)
    for (cx, cy), members in cells.items():
        near = [j for dx in (-1, 0, 1) for dy in (-1, 0, 1) for j in cells.get((cx + dx, cy + dy), [])]
        for i in members:
            for j in near:
                if j > i and root(i) != root(j) and distance_km(records[i].lon, records[i].lat,
                                                              records[j].lon, records[j].lat) < link_km:
                    parent[root(i)] = root(j)
    return {record.chip_id: root(index) for index, record in enumerate(records)}


def _deal(groups: list[list[str]], wanted: dict[str, int]) -> dict[str, str]:
    """Give groups to test, then val, up to their shares; the rest to train (the last group
    always trains, so training keeps chips when the fractions allow)."""
    wanted = dict(wanted)
    splits: dict[str, str] = {}
    for index, group in enumerate(groups):
        last = index == len(groups) - 1
        target = "train" if last else next((n for n in ("test", "val") if wanted.get(n, 0) > 0), "train")
        for chip_id in group:
            splits[chip_id] = target
        if target != "train":
            wanted[target] -= len(group)
    return splits


def _exclude_near(records: Sequence[ChipRecord], splits: dict[str, str], footprints: dict[str, Box],
                  gap_km: float) -> None:
    """A chip within ``gap_km`` of a chip of a later split leaves its own."""
    later = {name: [footprints[r.chip_id] for r in records if ORDER.get(splits[r.chip_id], -1) > rank]
             for name, rank in ORDER.items()}
    for record in records:
        own = splits[record.chip_id]
        if own != "test" and any(box_distance_km(footprints[record.chip_id], other) < gap_km
                                 for other in later[own]):
            splits[record.chip_id] = "excluded"


def box_distance_km(a: Box, b: Box) -> float:
    """Edge-to-edge distance between two lon/lat boxes (0 when they touch), on the local
    equirectangular approximation: fine at the chip-to-chip scale a gap is measured at."""
    dx = max(0.0, max(a[0], b[0]) - min(a[2], b[2]))
    dy = max(0.0, max(a[1], b[1]) - min(a[3], b[3]))
    latitude = math.radians((a[1] + a[3] + b[1] + b[3]) / 4)
    return math.hypot(dx * math.cos(latitude), dy) * KM_PER_DEGREE


def distance_km(lon1: float, lat1: float, lon2: float, lat2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(a, 1.0)))


def block_of(lon: float, lat: float, block_km: float) -> tuple[int, int]:
    """Block indices on a cylindrical equal-area grid (equal-sized blocks at any latitude)."""
    x = math.radians(lon) * EARTH_RADIUS_KM
    y = math.sin(math.radians(lat)) * EARTH_RADIUS_KM
    return math.floor(x / block_km), math.floor(y / block_km)

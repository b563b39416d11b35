import datetime as dt

import pytest
from pyproj import Transformer

from instageo.data.chip_build import ChipRecord
from instageo.data.grid import centred_grid, tiled_grids, utm_crs
from instageo.data.split import assign_splits, block_of, distance_km
from instageo.recipe.models import SplitSpec


@pytest.mark.parametrize("lon, lat, crs", [(39.9, 1.4, "EPSG:32637"), (-106.9, 40.3, "EPSG:32613"),
                                           (18.4, -33.9, "EPSG:32734")])
def test_a_centred_chip_holds_its_point_in_the_centre_pixel(lon, lat, crs):
    assert utm_crs(lon, lat) == crs
    grid = centred_grid(lon, lat, 32, 30.0, "utm")
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(lon, lat)
    column, row = ~grid.affine @ (x, y)
    assert (int(column), int(row)) == (16, 16)
    assert grid.transform[2] % 30 == 0 and grid.transform[5] % 30 == 0  # on the 30 m lattice


def test_tiles_cover_an_extent_with_the_last_ones_flush():
    grids = tiled_grids((39.9, 1.40, 39.95, 1.45), 64, 30.0, "utm", 64)
    lefts = sorted({g.bounds[0] for g in grids})
    rights = sorted({g.bounds[2] for g in grids})
    assert len(grids) == len(lefts) ** 2 and rights[-1] - lefts[0] >= 0.05 * 111_000 * 0.99
    assert all(b - a <= 64 * 30 for a, b in zip(lefts, lefts[1:]))


def records(n=200):
    return [ChipRecord(f"c{i:03d}", f"o{i}", 30 + (i % 20) * 0.05, 1 + (i // 20) * 0.05, "EPSG:32637",
                       (dt.date(2023, 1, 1) + dt.timedelta(days=i)).isoformat(), "ok") for i in range(n)]


def test_spatial_split_keeps_blocks_whole_and_shares_roughly_right():
    chips = records()
    splits = assign_splits(chips, SplitSpec(method="spatial", val=0.2, test=0.2, block_km=12), seed=3)
    block_split = {}
    for chip in chips:
        block = block_of(chip.lon, chip.lat, 12)
        assert block_split.setdefault(block, splits[chip.chip_id]) == splits[chip.chip_id]
    shares = {name: list(splits.values()).count(name) / len(chips) for name in ("train", "val", "test")}
    assert abs(shares["test"] - 0.2) < 0.06 and abs(shares["val"] - 0.2) < 0.06
    assert splits == assign_splits(chips, SplitSpec(method="spatial", block_km=12, val=0.2, test=0.2), seed=3)
    assert splits != assign_splits(chips, SplitSpec(method="spatial", block_km=12, val=0.2, test=0.2), seed=4)


def test_gap_leaves_no_train_chip_near_a_test_chip():
    chips = records()
    splits = assign_splits(chips, SplitSpec(block_km=12, gap_km=6, val=0.2, test=0.2), seed=1)
    train = [c for c in chips if splits[c.chip_id] == "train"]
    held = [c for c in chips if splits[c.chip_id] in ("val", "test")]
    assert train and "excluded" in splits.values()
    assert min(distance_km(a.lon, a.lat, b.lon, b.lat) for a in train for b in held) >= 6


def test_date_split_tests_on_the_latest_chips():
    chips = records(100)
    splits = assign_splits(chips, SplitSpec(method="date", val=0.1, test=0.2), seed=0)
    latest = sorted(chips, key=lambda c: c.date)[-20:]
    assert {splits[c.chip_id] for c in latest} == {"test"}
    assert list(splits.values()).count("val") == 10


def test_one_chip_still_trains():
    assert assign_splits(records(1), SplitSpec(), seed=0) == {"c000": "train"}


def test_fallback_order_of_acquisitions():
    from instageo.data.chips import _preference

    target = dt.date(2023, 3, 1)
    dates = [target + dt.timedelta(days=d) for d in (-9, -3, 0, 2, 8)]
    order = {prefer: [(d - target).days for d in sorted(dates, key=lambda d: _preference(d, target, prefer))]
             for prefer in ("nearest", "earlier", "later")}
    assert order == {"nearest": [0, 2, -3, 8, -9], "earlier": [0, -3, -9, 2, 8], "later": [0, 2, 8, -3, -9]}

import datetime as dt

import pytest
from pyproj import Transformer

from instageo.data.chip_build import ChipRecord
from instageo.data.grid import centred_grid, tiled_grids, utm_crs
from instageo.data.split import assign_splits, block_of, box_distance_km
from instageo.errors import InputError
from instageo.recipe.models import HeldOut, SplitSpec


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


def test_label_raster_tiles_never_share_pixels_and_reach_past_the_edge():
    grids = tiled_grids((39.9, 1.40, 39.95, 1.45), 64, 30.0, "utm", 64, flush=False)
    lefts = sorted({g.bounds[0] for g in grids})
    assert all(b - a == 64 * 30 for a, b in zip(lefts, lefts[1:]))  # side by side, no overlap
    boxes = [g.bounds for g in grids]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def records(n=200):
    return [ChipRecord(f"c{i:03d}", f"o{i // 10}", 30 + (i % 20) * 0.05, 1 + (i // 20) * 0.05, "EPSG:32637",
                       (dt.date(2023, 1, 1) + dt.timedelta(days=i)).isoformat(), "ok") for i in range(n)]


def boxes(chips, half=0.01):
    return {c.chip_id: (c.lon - half, c.lat - half, c.lon + half, c.lat + half) for c in chips}


def split(chips, spec, sources=None):
    return assign_splits(chips, spec, boxes(chips), sources or {})


def test_spatial_split_keeps_blocks_whole_and_shares_roughly_right():
    chips = records()
    splits = split(chips, SplitSpec(method="spatial", val=0.2, test=0.2, block_km=12, seed=3))
    block_split = {}
    for chip in chips:
        block = block_of(chip.lon, chip.lat, 12)
        assert block_split.setdefault(block, splits[chip.chip_id]) == splits[chip.chip_id]
    shares = {name: list(splits.values()).count(name) / len(chips) for name in ("train", "val", "test")}
    assert abs(shares["test"] - 0.2) < 0.06 and abs(shares["val"] - 0.2) < 0.06
    assert splits == split(chips, SplitSpec(method="spatial", block_km=12, val=0.2, test=0.2, seed=3))
    assert splits != split(chips, SplitSpec(method="spatial", block_km=12, val=0.2, test=0.2, seed=4))


def test_gap_separates_every_split_from_the_later_ones_edge_to_edge():
    chips = records()
    footprints = boxes(chips)
    splits = assign_splits(chips, SplitSpec(block_km=12, gap_km=4, val=0.2, test=0.2, seed=1), footprints, {})
    assert "excluded" in splits.values()
    for earlier, later in (("train", "val"), ("train", "test"), ("val", "test")):
        mine = [footprints[c] for c, s in splits.items() if s == earlier]
        theirs = [footprints[c] for c, s in splits.items() if s == later]
        assert mine and theirs
        assert min(box_distance_km(a, b) for a in mine for b in theirs) >= 4, (earlier, later)


def test_box_distance_is_edge_to_edge():
    assert box_distance_km((0, 0, 1, 1), (0.5, 0.5, 2, 2)) == 0  # overlapping
    assert box_distance_km((0, 0, 1, 1), (1.1, 0, 2, 1)) == pytest.approx(0.1 * 111.195, rel=1e-3)
    assert box_distance_km((0, 0, 1, 1), (1, 1, 2, 2)) == 0  # corners touch


def test_date_split_tests_on_the_latest_chips():
    chips = records(100)
    splits = split(chips, SplitSpec(method="date", val=0.1, test=0.2))
    latest = sorted(chips, key=lambda c: c.date)[-20:]
    assert {splits[c.chip_id] for c in latest} == {"test"}
    assert list(splits.values()).count("val") == 10


def test_one_chip_still_trains():
    assert split(records(1), SplitSpec()) == {"c000": "train"}


def test_a_files_split_tests_exactly_the_named_rasters():
    chips = records(100)  # observations o0..o9, ten chips each
    sources = {f"o{i}": f"/data/{'Spain' if i in (2, 7) else 'Ghana'}_{i}_LabelHand.tif" for i in range(10)}
    spec = SplitSpec(method="spatial", block_km=3, test=HeldOut(files=["Spain_*"]), val=0.2)
    splits = split(chips, spec, sources)
    assert {c for c, s in splits.items() if s == "test"} == {c.chip_id for c in chips if c.observation in ("o2", "o7")}
    assert abs(list(splits.values()).count("val") - 20) <= 10 and "train" in splits.values()
    by_id = split(chips, SplitSpec(test=HeldOut(ids=["o2", "c099"]), val=HeldOut(files=["o3"])), sources)
    assert {c for c, s in by_id.items() if s == "test"} == {f"c{i:03d}" for i in range(20, 30)} | {"c099"}
    assert {c for c, s in by_id.items() if s == "val"} == {f"c{i:03d}" for i in range(30, 40)}


def test_a_region_split_takes_every_chip_whose_footprint_touches_it():
    chips = records()
    region = (30.2, 1.2, 30.31, 1.31)
    splits = split(chips, SplitSpec(test=HeldOut(regions=[region]), val=0.1))
    footprints = boxes(chips)
    touching = {c for c, box in footprints.items() if box[0] <= region[2] and region[0] <= box[2]
                and box[1] <= region[3] and region[1] <= box[3]}
    assert touching and {c for c, s in splits.items() if s == "test"} == touching


def test_named_sets_that_take_nothing_or_everything_are_errors():
    chips = records(20)
    with pytest.raises(InputError, match=r"data.split.test.files: 'Spian_\*' matches no observation"):
        split(chips, SplitSpec(test=HeldOut(files=["Spian_*"])))
    with pytest.raises(InputError, match="none is left for training"):
        split(chips, SplitSpec(test=HeldOut(files=["o0"]), val=HeldOut(files=["o1"])))


def test_fallback_order_of_acquisitions():
    from instageo.data.chips import _preference

    target = dt.date(2023, 3, 1)
    dates = [target + dt.timedelta(days=d) for d in (-9, -3, 0, 2, 8)]
    order = {prefer: [(d - target).days for d in sorted(dates, key=lambda d: _preference(d, target, prefer))]
             for prefer in ("nearest", "earlier", "later")}
    assert order == {"nearest": [0, 2, -3, 8, -9], "earlier": [0, -3, -9, 2, 8], "later": [0, 2, 8, -3, -9]}


def test_cluster_split_keeps_chains_of_neighbours_together():
    # two chains of chips 0.5 km apart, 20 km from each other: two clusters at block_km 1
    chips = [ChipRecord(f"a{i}", "o", 30 + i * 0.0045, 1.0, "EPSG:32637", "2023-01-01", "ok") for i in range(10)]
    chips += [ChipRecord(f"b{i}", "o", 30.2 + i * 0.0045, 1.0, "EPSG:32637", "2023-01-01", "ok") for i in range(10)]
    splits = split(chips, SplitSpec(method="clusters", block_km=1, val=0.0, test=0.5))
    assert {splits[f"a{i}"] for i in range(10)} in ({"test"}, {"train"})
    assert {splits[f"b{i}"] for i in range(10)} in ({"test"}, {"train"})
    assert splits["a0"] != splits["b0"]


def test_tile_and_year_splits_keep_their_groups_whole():
    from instageo.data.split import tile_of

    tiles = ["S2A_MSIL2A_20230101_N0509_R035_T33UUU_20230101", "HLS.S30.T33UVU.2023001T101010.v2.0",
             "LE70350322008118EDC00", "LC08_L2SP_036032_20200101_20200110_02_T1"]
    assert [tile_of(ChipRecord("c", "o", 0, 0, "", "", "ok", items=[t])) for t in tiles] == [
        "33UUU", "33UVU", "035032", "036032"]
    chips = [ChipRecord(f"c{i}", "o", 30 + i * 0.01, 1, "EPSG:32637", f"{2018 + i % 4}-06-01", "ok",
                        items=[tiles[i % 4]]) for i in range(40)]
    for method, group in (("tile", lambda c: c.items[0]), ("year", lambda c: c.date[:4])):
        splits = split(chips, SplitSpec(method=method, val=0.25, test=0.25))
        for value in {group(c) for c in chips}:
            assert len({splits[c.chip_id] for c in chips if group(c) == value}) == 1, (method, value)
        assert set(splits.values()) == {"train", "val", "test"}

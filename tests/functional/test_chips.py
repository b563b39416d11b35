"""The chips stage on the demo scene and on real Sen1Floods11 chips, verify, dask."""

import csv
import json
import shutil

import numpy as np
import pytest
import rasterio

from instageo.cli import main
from instageo.data.chip_build import build_chip
from instageo.data.chips import make_jobs
from instageo.files import sha256_file
from instageo.recipe import load_recipe
from instageo.runner.stage import StageResult
from tests.conftest import REPO, SHARED_DATA
from tests.sen1floods11 import write_recipe


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """recipes/tiny.yaml run up to chips, in a temporary folder (lock file included)."""
    folder = tmp_path_factory.mktemp("tiny")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), "--until", "chips"]) == 0
    report = json.loads((folder / "runs" / "tiny" / "report.json").read_text())
    chips = next(s for s in report["stages"] if s["name"] == "chips")
    return folder, folder / "runs" / "tiny" / chips["outputs"]["index"], report


def rows(index):
    with open(index, newline="") as handle:
        return list(csv.DictReader(handle))


def test_chips_are_georeferenced_multitemporal_and_checksummed(tiny):
    folder, index, report = tiny
    stage = index.parent
    chips = rows(index)
    assert len(chips) == report["dataset"]["chips"] > 20
    assert sum(report["dataset"]["skipped"].values()) + len(chips) == 40
    for row in chips:
        assert sha256_file(stage / row["image"]) == row["image_sha256"]
        assert sha256_file(stage / row["label"]) == row["label_sha256"]
        assert row["split"] in ("train", "val", "test") and len(row["items"].split(";")) == 2
    with rasterio.open(stage / chips[0]["image"]) as dataset:
        assert dataset.count == 2 * 6 and dataset.crs.to_string() == "EPSG:32637"
        assert dataset.descriptions[:2] == ("t0_blue", "t0_green") and dataset.descriptions[-1] == "t1_swir22"
        assert dataset.profile["compress"] == "zstd"
        image = dataset.read()
    assert 0 < np.nanmean(image) < 0.6  # reflectance, scaled
    from pyproj import Transformer

    shifted = 0
    for chip in chips:
        with rasterio.open(stage / chip["label"]) as dataset:
            label = dataset.read(1)
            x, y = Transformer.from_crs("EPSG:4326", dataset.crs, always_xy=True).transform(
                float(chip["lon"]), float(chip["lat"]))
            row, column = dataset.index(x, y)
        # the observation's own pixel (buffer 1) is labelled, wherever the random shift put it
        assert (label[max(row - 1, 0):row + 2, max(column - 1, 0):column + 2] != -1).any()
        assert (label != -1).mean() < 0.5
        shifted += (row, column) != (8, 8)
    assert shifted > len(chips) / 2  # most chips are off-centre (shift: a quarter of 16 pixels)
    stats = json.loads((stage / "stats.json").read_text())
    assert len(stats["mean"]) == 6 and len(stats["class_weights"]) == 3
    assert (stage / "quicklook.png").stat().st_size > 1000


def test_the_lock_pins_every_chip_and_verify_rebuilds_them_identically(tiny, capsys):
    folder, index, _ = tiny
    lock = json.loads((folder / "tiny.lock.json").read_text())
    assert {r["chip_id"]: [r["image_sha256"], r["label_sha256"]] for r in rows(index)} == lock["chips"]["checksums"]
    runs = ["--runs-dir", str(folder / "runs")]
    assert main(["verify", str(folder / "tiny.yaml"), *runs]) == 0
    assert "0 differing, 0 missing, 0 extra; 0 file(s) altered" in capsys.readouterr().out

    altered = index.parent / rows(index)[0]["image"]
    original = altered.read_bytes()
    altered.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    try:
        assert main(["verify", str(folder / "tiny.yaml"), *runs]) == 1
        out = capsys.readouterr()
        assert f"altered: {altered}" in out.out and "chips differ from the lock file" in out.err
    finally:
        altered.write_bytes(original)


def test_a_finished_chip_is_not_rebuilt(tiny, tmp_path):
    folder, index, _ = tiny
    recipe = load_recipe(folder / "tiny.yaml")
    search_dir = next((folder / "runs" / "tiny" / "stages").glob("search-*"))
    search = StageResult("search", "k", search_dir, {"items": "items.json", "candidates": "candidates.json",
                                                      "observations": "observations.csv"}, {})
    job = make_jobs(recipe, search)[0]
    first = build_chip(job, str(tmp_path))
    stamp = (tmp_path / first.image).stat().st_mtime_ns
    assert build_chip(job, str(tmp_path)) == first
    assert (tmp_path / first.image).stat().st_mtime_ns == stamp


def test_dask_builds_the_same_chips_as_threads(tiny, tmp_path):
    folder, index, _ = tiny
    text = (folder / "tiny.yaml").read_text().replace("  split:", "  executor: {kind: dask, workers: 2}\n  split:")
    (tmp_path / "tiny.yaml").write_text(text)
    shutil.copy(folder / "tiny.lock.json", tmp_path / "tiny.lock.json")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    dask_index = next((tmp_path / "runs" / "tiny" / "stages").glob("chips-*")) / "index.csv"
    assert dask_index.read_bytes() == index.read_bytes()


def test_sen1floods11_label_rasters_are_tiled_and_bad_chips_skipped_with_reasons(tmp_path):
    write_recipe(tmp_path, "{size: 128, resolution: 10, bands: [vv, vh], "
                              "time: {steps: 1, tolerance_days: 1}, mask: {max_fraction: 0.5}}",
                              "{method: random}")
    assert main([str(tmp_path / "floods.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    report = json.loads((tmp_path / "runs" / "floods" / "report.json").read_text())
    stage = next((tmp_path / "runs" / "floods" / "stages").glob("chips-*"))
    records = [json.loads(p.read_text()) for p in (stage / "records").glob("*.json")]
    by_scene = {}
    for record in records:
        by_scene.setdefault(record["observation"].rsplit("_", 1)[0], []).append(record)
    assert {r["reason"] for r in by_scene["Paraguay_34417"]} == {"no_data"}  # S1 entirely NaN
    assert {r["reason"] for r in by_scene["Ghana_83483"]} == {"no_labels"}  # labels all -1
    # Spain: chips side by side at their own centres; the last row and column reach past the
    # raster (padded), and those mostly outside its imagery are skipped as no_data
    spain = by_scene["Spain_7370579"]
    assert {r["reason"] for r in spain if r["status"] != "ok"} <= {"no_data"}
    assert sum(r["status"] == "ok" for r in spain) >= 9 and len({(r["lon"], r["lat"]) for r in spain}) == len(spain)
    assert report["dataset"]["skipped"]["no_data"] >= len(by_scene["Paraguay_34417"])
    check_spain_chips_share_no_pixel(stage, [r for r in spain if r["status"] == "ok"])
    built = [r for r in records if r["status"] == "ok"]
    assert report["dataset"]["chips"] == len(built) > 50
    with rasterio.open(stage / built[0]["label"]) as dataset:
        assert set(np.unique(dataset.read(1))) <= {-1, 0, 1}
    with rasterio.open(stage / by_scene["Spain_7370579"][0]["image"]) as dataset:
        vv = dataset.read(1)
    assert -30 < np.nanmedian(vv) < 5  # VV backscatter in dB
    stats = json.loads((stage / "stats.json").read_text())
    assert stats["class_pixels"][1] > 0  # water on the train split


def check_spain_chips_share_no_pixel(stage, records) -> None:
    """No two chips of one label raster overlap, and they hold no more labelled pixels than
    the raster does (edge chips used to be shifted inward, counting edge pixels twice)."""
    import rasterio
    from rasterio.warp import transform_bounds

    boxes, labelled = [], 0
    for record in records:
        with rasterio.open(stage / record["label"]) as dataset:
            boxes.append(dataset.bounds)
            labelled += int((dataset.read(1) != -1).sum())
            crs, pixel = dataset.crs, dataset.res[0] * dataset.res[1]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a.right <= b.left or b.right <= a.left or a.top <= b.bottom or b.top <= a.bottom
    with rasterio.open(SHARED_DATA / "sen1floods11" / "Spain_7370579_LabelHand.tif") as scene:
        left, bottom, right, top = transform_bounds(scene.crs, crs, *scene.bounds)
        scene_labelled = int((scene.read(1) != -1).mean() * (right - left) * (top - bottom) / pixel)
    assert labelled <= scene_labelled * 1.02, (labelled, scene_labelled)


def test_truncated_files_and_points_outside_every_scene_are_skipped_with_reasons(tmp_path):
    assert main(["demo-data", str(tmp_path / "scene"), "--size", "96", "--acquisitions", "4",
                 "--points", "20", "--no-quicklook"]) == 0
    victim = sorted((tmp_path / "scene" / "hls-demo").glob("*/B04.tif"))[1]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated mid-file
    with open(tmp_path / "scene" / "observations.csv", "a") as handle:
        handle.write("far,10.0,50.0,2023-02-04,1\n")  # nowhere near the scene
    (tmp_path / "r.yaml").write_text(
        "name: r\ndata:\n  source: {kind: catalog, path: scene/catalog.json}\n"
        "  observations: {kind: points, path: scene/observations.csv}\n"
        "  chips: {size: 16, time: {steps: 2, step_days: 16, tolerance_days: 0}, mask: {max_fraction: 1}}\n"
        "task: {classes: [other, water, vegetation]}\n")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    skipped = report["dataset"]["skipped"]
    assert skipped["no_scene"] >= 1 and skipped["unreadable"] >= 1
    assert report["dataset"]["chips"] + sum(skipped.values()) == 21
    stage = next((tmp_path / "runs" / "r" / "stages").glob("chips-*"))
    assert json.loads((stage / "records" / "far.json").read_text())["reason"] == "no_scene"


def test_polygon_labels_are_rasterised_into_chips(tmp_path):
    import datetime as dt

    from instageo.data import demo

    polygons = SHARED_DATA / "labels" / "kenya_croptype_00.geojson"
    fields = json.loads(polygons.read_text())["features"]
    crops = sorted({f["properties"]["Crop1"] for f in fields})
    # a synthetic scene under the real Kenyan fields (their file is in UTM 36N)
    demo.generate(tmp_path / "scene", seed=3, size=448, acquisitions=6, points=1, crs="EPSG:32636",
                  origin=(631500.0, 65190.0), first_date=dt.date(2019, 4, 20))
    (tmp_path / "crop.yaml").write_text(f"""
name: crop
data:
  source: {{kind: catalog, path: scene/catalog.json}}
  observations: {{kind: polygons, path: {polygons}, label: Crop1, date: Survey Date}}
  chips: {{size: 32, resolution: 10, time: {{steps: 1, tolerance_days: 20}}, mask: {{max_fraction: 1}}}}
task: {{classes: {json.dumps(crops)}}}
""")
    assert main([str(tmp_path / "crop.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    stage = next((tmp_path / "runs" / "crop" / "stages").glob("chips-*"))
    chips = rows(stage / "index.csv")
    assert len(chips) >= 0.9 * len(fields)
    from pyproj import Transformer

    own_classes = []
    for row in chips:
        with rasterio.open(stage / row["label"]) as dataset:
            label = dataset.read(1)
            x, y = Transformer.from_crs("EPSG:4326", dataset.crs, always_xy=True).transform(
                float(row["lon"]), float(row["lat"]))
            pixel = dataset.index(x, y)
        assert dataset.crs.to_string() == "EPSG:32636"
        index = int(row["observation"].rsplit("-", 1)[1])
        expected = crops.index(fields[index]["properties"]["Crop1"])
        own_classes.append(label[pixel] == expected)
        assert set(np.unique(label)) <= set(range(len(crops))) | {-1}
    assert np.mean(own_classes) > 0.9  # the chip's own field is under its point (10 m pixels), shifted or not


def test_a_polygon_label_outside_the_classes_is_a_clear_error(tmp_path, capsys):
    polygons = SHARED_DATA / "labels" / "kenya_croptype_00.geojson"
    (tmp_path / "r.yaml").write_text(
        f"name: r\ndata:\n  source: {{kind: demo}}\n  observations: {{kind: polygons, path: {polygons}, "
        "label: Crop1, date: Survey Date}\ntask: {classes: [Maize, Cassava]}\n")
    assert main([str(tmp_path / "r.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "search"]) == 2
    assert "is not one of task.classes ['Maize', 'Cassava']" in capsys.readouterr().err


def demo_catalogue_recipe(folder, observations: str, chips: str, size: int = 64, acquisitions: int = 2,
                          points: int = 8, classes: str = "[other, water, vegetation]") -> list[str]:
    """A demo scene written by `demo-data`, read as a local catalogue by recipe r.yaml (all
    chips train); returns the argv that runs it to the chips stage."""
    assert main(["demo-data", str(folder / "scene"), "--size", str(size), "--acquisitions", str(acquisitions),
                 "--points", str(points), "--no-quicklook"]) == 0
    (folder / "r.yaml").write_text(
        f"name: r\ndata:\n  source: {{kind: catalog, path: scene/catalog.json}}\n  observations: {observations}\n"
        f"  chips: {chips}\n  split: {{method: random, val: 0, test: 0}}\ntask: {{classes: {classes}}}\n")
    return [str(folder / "r.yaml"), "--runs-dir", str(folder / "runs"), "--until", "chips"]


def test_every_observation_inside_a_chip_is_labelled(tmp_path):
    """Three points 60-90 m apart, three classes, one date window: each point's chip labels
    all three at their own pixels; a fourth point out of the date window is not labelled."""
    from pyproj import Transformer

    points = [("a", 39.9100, 1.4300, "2023-01-19", 0), ("b", 39.9106, 1.4305, "2023-01-19", 1),
              ("c", 39.9096, 1.4293, "2023-01-25", 2), ("late", 39.9103, 1.4297, "2023-06-01", 1)]
    run = demo_catalogue_recipe(tmp_path, "{kind: points, path: obs.csv}", "{size: 16, shift: 2, label: {buffer: 0}, "
                                "time: {steps: 1, tolerance_days: 10}, mask: {max_fraction: 1}}", size=96,
                                acquisitions=3, points=5)
    (tmp_path / "obs.csv").write_text("id,x,y,date,label\n" + "".join(f"{p[0]},{p[1]},{p[2]},{p[3]},{p[4]}\n" for p in points))
    assert main(run) == 0
    stage = next((tmp_path / "runs" / "r" / "stages").glob("chips-*"))
    built = {row["chip_id"]: row for row in rows(stage / "index.csv")}
    for own in ("a", "b", "c"):
        with rasterio.open(stage / built[own]["label"]) as dataset:
            label = dataset.read(1)
            to_chip = Transformer.from_crs("EPSG:4326", dataset.crs, always_xy=True).transform
            for name, lon, lat, _, value in points:
                row, column = dataset.index(*to_chip(lon, lat))
                if name == "late":  # 4+ months away: another date window, not labelled here
                    assert 0 <= row < 16 and 0 <= column < 16 and label[row, column] == -1, own
                else:
                    assert label[row, column] == value, (own, name)
        assert (label != -1).sum() <= 3
    # at least three observations per chip: the late point, alone in its date window, is skipped
    assert main([*run, "--set", "data.chips.min_observations=3"]) == 0
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    assert report["dataset"]["skipped"].get("few_observations") == 1 and report["dataset"]["chips"] <= 3


def test_a_class_without_train_pixels_is_a_warning_in_the_console_and_the_report(tmp_path, capsys):
    run = demo_catalogue_recipe(tmp_path, "{kind: points, path: scene/observations.csv}",
                                "{size: 16, time: {tolerance_days: 20}, mask: {max_fraction: 1}}",
                                classes="[other, water, vegetation, snow]")
    assert main(run) == 0
    assert "class 'snow' has no pixel in the train split" in capsys.readouterr().err
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    assert "class 'snow' has no pixel in the train split: the models cannot learn it" in report["dataset"]["warnings"]


def test_a_time_of_day_and_minutes_pick_the_acquisitions(tmp_path):
    """The demo's acquisitions are at 10:30 UTC: an observation at 10:50 within 30 minutes
    gets its chip; one at 15:00 finds no scene; the same at the day tolerance does."""
    run = demo_catalogue_recipe(tmp_path, "{kind: points, path: obs.csv, time: time}",
                                "{size: 16, time: {tolerance_days: 1, tolerance_minutes: 30}, mask: {max_fraction: 1}}",
                                points=2)
    first = next(csv.DictReader(open(tmp_path / "scene" / "observations.csv")))
    (tmp_path / "obs.csv").write_text(
        "id,x,y,date,time,label\n"
        f"near,{first['x']},{first['y']},{first['date']},10:50,1\nlate,{first['x']},{first['y']},{first['date']},15:00,1\n")
    assert main(run) == 0
    report = json.loads((tmp_path / "runs" / "r" / "report.json").read_text())
    assert report["dataset"]["chips"] == 1 and report["dataset"]["skipped"] == {"no_scene": 1}
    assert main([*run, "--set", "data.chips.time.tolerance_minutes=null"]) == 0
    assert json.loads((tmp_path / "runs" / "r" / "report.json").read_text())["dataset"]["chips"] == 2


def test_parquet_points_and_geoparquet_polygons_are_read_with_their_columns_and_crs(tmp_path):
    """The real WorldCereal extractions (Parquet, 500 points, lon/lat/valid_time/ewoc_code),
    and polygons written as GeoParquet in a projected CRS."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import shapely
    from pyproj import CRS

    from instageo.data.observations import Labels, read_points, read_polygons
    from instageo.recipe.models import PolygonObservations

    path = SHARED_DATA / "worldcereal" / "test_public_extractions.parquet"
    table = pq.read_table(path)
    codes = sorted(set(table.column("ewoc_code").to_pylist()))
    labels = Labels(("first", "other"), remap={str(c): ("first" if c == codes[0] else "other") for c in codes})
    points = read_points(path, "lon", "lat", "valid_time", "ewoc_code", labels=labels)
    assert len(points) == table.num_rows == 500
    assert points[0].lon == pytest.approx(table.column("lon")[0].as_py())
    assert sum(p.label == 0 for p in points) == table.column("ewoc_code").to_pylist().count(codes[0])

    square = shapely.box(500_000, 9_990_000, 500_300, 9_990_300)  # UTM 37S, near the equator
    geo = {"version": "1.0.0", "primary_column": "geometry",
           "columns": {"geometry": {"encoding": "WKB", "crs": CRS("EPSG:32737").to_json_dict()}}}
    parquet_table = pa.table({"geometry": [shapely.to_wkb(square)], "crop": ["maize"], "day": ["2023-02-01"]})
    pq.write_table(parquet_table.replace_schema_metadata({b"geo": json.dumps(geo)}), tmp_path / "fields.parquet")
    spec = PolygonObservations(kind="polygons", path=tmp_path / "fields.parquet", label="crop", date="day")
    (polygon,) = read_polygons(spec, Labels(("maize", "beans")), None)
    assert polygon.label == 0 and polygon.date.isoformat() == "2023-02-01"
    from pyproj import Transformer

    west, south = Transformer.from_crs("EPSG:32737", "EPSG:4326", always_xy=True).transform(500_000, 9_990_000)
    east, north = Transformer.from_crs("EPSG:32737", "EPSG:4326", always_xy=True).transform(500_300, 9_990_300)
    assert west < polygon.lon < east and south < polygon.lat < north  # read in its own CRS, not as lon/lat


def test_a_label_raster_remap_relabels_its_pixels(tmp_path):
    """Sen1Floods11's 0 (land) / 1 (water) read as a one-class water task: land pixels are
    not labelled, water is class 0."""
    import numpy as np

    write_recipe(tmp_path, "{size: 128, resolution: 10, bands: [vv], time: {steps: 1, tolerance_days: 1}, "
                 "mask: {max_fraction: 0.5}}", "{method: random}")
    text = (tmp_path / "floods.yaml").read_text()
    text = text.replace("dates: label_dates.csv}", "dates: label_dates.csv, remap: {1: water}}")
    (tmp_path / "floods.yaml").write_text(text.replace("task: {classes: [land, water]}", "task: {classes: [water, other]}"))
    assert main([str(tmp_path / "floods.yaml"), "--runs-dir", str(tmp_path / "runs"), "--until", "chips"]) == 0
    stage = next((tmp_path / "runs" / "floods" / "stages").glob("chips-*"))
    spain = [r for r in rows(stage / "index.csv") if r["chip_id"].startswith("Spain")]
    values = set()
    for row in spain:
        with rasterio.open(stage / row["label"]) as dataset:
            values |= set(np.unique(dataset.read(1)).tolist())
    assert values == {-1, 0}


def test_grid_placement_tiles_the_points_extent_without_overlap(tmp_path):
    import numpy as np

    run = demo_catalogue_recipe(tmp_path, "{kind: points, path: scene/observations.csv}",
                                "{size: 16, placement: grid, label: {buffer: 0}, time: {steps: 1, tolerance_days: 0}, "
                                "mask: {max_fraction: 1}}", size=96, acquisitions=3, points=30)
    assert main(run) == 0
    stage = next((tmp_path / "runs" / "r" / "stages").glob("chips-*"))
    built = rows(stage / "index.csv")
    assert built and all(r["chip_id"].startswith("grid-") for r in built)
    labelled, boxes = 0, {}
    for row in built:
        with rasterio.open(stage / row["label"]) as dataset:
            labelled += int((dataset.read(1) != -1).sum())
            boxes.setdefault(row["date"], []).append(dataset.bounds)
    assert len(built) <= labelled <= 30  # buffer 0: one pixel per point, each chip at least its own
    for same_date in boxes.values():  # chips of one date never overlap
        for i, a in enumerate(same_date):
            for b in same_date[i + 1:]:
                assert a.right <= b.left or b.right <= a.left or a.top <= b.bottom or b.top <= a.bottom
    assert len(built) < 30  # points share chips


def test_acquisitions_without_a_cloud_mask_are_named_and_can_be_skipped(tmp_path, capsys):
    run = demo_catalogue_recipe(tmp_path, "{kind: points, path: scene/observations.csv}",
                                "{size: 16, time: {tolerance_days: 20}, mask: {max_fraction: 1}}")
    for item in (tmp_path / "scene").rglob("HLS.demo.*.json"):  # every item loses its Fmask
        document = json.loads(item.read_text())
        document["assets"].pop("Fmask")
        item.write_text(json.dumps(document))
    assert main(run) == 0
    assert "acquisition(s) have no cloud mask, so their clouds stay in the chips: HLS.demo." in capsys.readouterr().err
    code = main([*run, "--set", "data.chips.mask.require=true"])
    assert code == 2 and "are skipped (data.chips.mask.require)" in capsys.readouterr().err

"""The predict stage: the exported student over the area, as valid COGs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.shutil import exists
from rasterio.warp import transform_bounds

from instageo.cli import main
from instageo.engine.heads import blend_window
from tests.conftest import REPO


def test_prediction_is_a_cog_with_classes_colours_and_overviews(tmp_path):
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs")]) == 0
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    prediction = tmp_path / "runs" / "tiny" / report["prediction"]
    confidence = tmp_path / "runs" / "tiny" / report["confidence"]
    assert exists(str(prediction)) and prediction.name == "prediction.tif"
    with rasterio.open(prediction) as dataset:
        assert dataset.driver == "GTiff" and dataset.crs.to_string() == "EPSG:32637"
        assert dataset.profile["tiled"] and dataset.nodata == 255
        assert dataset.tags(1)["class_1"] == "water"
        assert dataset.colormap(1)[1][:3] == (33, 102, 172)  # task colour of water (default palette)
        classes = dataset.read(1)
        assert dataset.tags()["model"] == "instageo_ci depth 1"
        structure = dataset.tags(ns="IMAGE_STRUCTURE")
        assert structure.get("LAYOUT") == "COG"
        assert dataset.overviews(1) == [2, 4, 8]  # 131 x 141 px: levels while the short side keeps 16 px
        area = report["variants"][0]["prediction_area"]
        assert (dataset.width, dataset.height) == (area["width"], area["height"])
        west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
        box = area["bbox"]  # the tiles cover the area, overshooting by less than a pixel (30 m)
        assert west <= box[0] and south <= box[1] and east >= box[2] and north >= box[3]
        assert max(box[0] - west, box[1] - south, east - box[2], north - box[3]) < 0.0006
    values = set(np.unique(classes).tolist())
    assert values <= {0, 1, 2, 255} and len(values - {255}) >= 2
    with rasterio.open(confidence) as dataset:
        probability = dataset.read(1)
    labelled = classes != 255
    assert np.all((probability[labelled] > 1 / 3 - 1e-6) & (probability[labelled] <= 1 + 1e-6))
    assert report["variants"][0]["prediction_area"]["tiles"] > 10
    # a STAC item for the COGs (checked by stac-pydantic), its box the COG's own
    from stac_pydantic import Item

    item = json.loads(prediction.with_name("item.json").read_text())
    Item.model_validate(item)
    assert item["properties"]["datetime"].startswith(report["variants"][0]["prediction_area"]["date"])
    assert {"prediction", "confidence", "rgb"} == set(item["assets"]) and item["properties"]["proj:epsg"] == 32637
    assert all(prediction.with_name(a["href"]).is_file() for a in item["assets"].values())
    assert item["bbox"] == pytest.approx([west, south, east, north], abs=1e-6)


def test_blend_window_ramps_only_in_the_overlap():
    window = blend_window(16, 4)
    assert window[8, 8] == 1 and 0 < window[0, 8] < window[2, 8] < 1
    assert np.allclose(window, window.T) and np.allclose(window, window[::-1, ::-1])


@pytest.mark.parametrize("bbox", ["[30.0,-10.0,50.0,10.0]", "[-180,-85,180,85]", "[-179.9,60,179.9,61]"])
def test_an_area_too_large_for_memory_is_refused_before_reading(tmp_path, capsys, bbox):
    """The whole globe and a band round it passed once (width measured as a great-circle
    distance: about 0 from -180 to 180) and grew memory at 50 MB/s."""
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    code = main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"),
                 "--set", f"export.predict.bbox={bbox}"])
    assert code == 2
    assert "set export.predict.bbox to a smaller area" in capsys.readouterr().err


def test_strip_streams_the_mosaic_one_array_would_hold():
    """Tiles added row by row and taken in strips blend to exactly what accumulating the whole
    area in one array gives (the reference below), with memory of one tile row's height."""
    from instageo.data.grid import tiled_grids
    from instageo.engine.loop import Strip
    from instageo.engine.sinks import classes_of
    from instageo.engine.tiling import Layout

    size, stride, classes = 16, 12, 3
    grids = tiled_grids((39.90, 1.41, 39.915, 1.43), size, 30.0, "utm", stride)
    layout = Layout.of(grids)
    rng = np.random.default_rng(0)
    tiles = [rng.dirichlet(np.ones(classes), (size, size)).transpose(2, 0, 1).astype(np.float32) for _ in grids]
    weight = blend_window(size, size - stride)
    reference = np.zeros((classes, layout.height, layout.width), np.float32)
    weights = np.zeros((layout.height, layout.width), np.float32)
    for grid, tile in zip(grids, tiles):
        row, column = layout.offset(grid)
        reference[:, row:row + size, column:column + size] += tile * weight
        weights[row:row + size, column:column + size] += weight
    expected = (reference / weights).argmax(0)

    strip, streamed, rows_held = Strip(layout, classes, size, rgb=False), [], set()
    for grid, tile in zip(grids, tiles):
        row = layout.offset(grid)[0]
        if row > strip.top:
            streamed.append(strip.take(row - strip.top))
        strip.add(grid, tile, weight)
        rows_held.add(strip.weights.shape[0])
    streamed.append(strip.take(layout.height - strip.top))
    streamed = [classes_of(mean, covered) for mean, covered, _ in streamed]
    classes_out = np.concatenate([part[0] for part in streamed])
    confidence = np.concatenate([part[1] for part in streamed])
    assert len({layout.offset(g)[0] for g in grids}) > 3 and rows_held == {size}
    assert classes_out.shape == (layout.height, layout.width)
    assert np.array_equal(classes_out, expected)
    assert np.allclose(confidence, (reference / weights).max(0), atol=1e-6)


def test_a_declared_area_and_date_outside_the_searched_items_get_a_fresh_search(tmp_path):
    """A GeoJSON triangle on a date before every observation's window: the predict stage asks
    the catalogue for that date, and masks everything outside the triangle."""
    from shapely.geometry import Polygon, box, mapping

    triangle = Polygon([(39.902, 1.415), (39.930, 1.415), (39.916, 1.445)])
    (tmp_path / "area.geojson").write_text(json.dumps(
        {"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {},
                                                    "geometry": mapping(triangle)}]}))
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"),
                 "--set", "data.source.acquisitions=12", "--set", "export.predict.date=2023-01-19",
                 "--set", f"export.predict.geojson={tmp_path / 'area.geojson'}"]) == 0
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    area = report["variants"][0]["prediction_area"]
    assert area["items_from"] == "demo" and area["date"] == "2023-01-19"
    items = json.loads((tmp_path / "runs" / "tiny" / report["prediction"]).with_name("items.json").read_text())
    assert "HLS.demo.2023-01-03" in items  # first step of the 2023-01-19 chip, searched for no observation
    searched = json.loads(next((tmp_path / "runs" / "tiny" / "stages").glob("search-*/items.json")).read_text())
    assert "HLS.demo.2023-01-03" not in searched
    with rasterio.open(tmp_path / "runs" / "tiny" / report["prediction"]) as dataset:
        classes = dataset.read(1)
        from rasterio.features import geometry_mask
        from rasterio.warp import transform_geom

        inside = ~geometry_mask([transform_geom("EPSG:4326", dataset.crs, mapping(triangle))],
                                classes.shape, dataset.transform)
        assert box(*dataset.bounds).area > 0
    assert np.all(classes[~inside] == 255)
    assert (classes[inside] != 255).mean() > 0.5  # tiles too cloudy on that date stay empty


def test_a_viewer_zoom_range_of_too_many_tiles_is_refused_before_any_work(tmp_path, capsys):
    import shutil

    from instageo.cli import main
    from tests.conftest import REPO

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    code = main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--set", "export.viewer.zoom=[0,22]",
                 "--set", "export.predict.bbox=[39.9,1.41,39.94,1.45]"])
    err = capsys.readouterr().err
    assert code == 2 and "export.viewer.zoom [0, 22]:" in err and "tiles per layer" in err, err
    assert not (tmp_path / "runs" / "tiny" / "stages").exists() or not list((tmp_path / "runs" / "tiny" / "stages").iterdir())


@pytest.fixture(scope="module")
def demo_bundle(tmp_path_factory):
    """The demo recipe's bundle (one training epoch: the bundle is what matters here)."""
    runs = tmp_path_factory.mktemp("demo") / "runs"
    assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(runs), "--until", "predict",
                 "--set", "student.depth=1", "--set", "teacher.train.epochs=1", "--set", "student.train.epochs=1"]) == 0
    return runs / "demo", json.loads((runs / "demo" / "report.json").read_text())


INSTARUN = str(Path(sys.executable).parent / "instarun")
# VmHWM, the peak RSS of this process image (ru_maxrss survives exec: it kept pytest's)
PEAK_RSS = """
import sys
from instageo.cli import main
code = main(sys.argv[1:])
peak = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(f"peak_rss_kib={peak} torch={'torch' in sys.modules}")
sys.exit(code)
"""


def test_instarun_predict_on_the_demo_bundle_makes_the_predict_stage_cogs_byte_for_byte(demo_bundle, tmp_path):
    """The bundle alone (no recipe, no runs folder) over the stage's area and date: the same
    items chosen, the same reads, the same blending, the same bytes."""
    run_dir, report = demo_bundle
    variant = report["variants"][0]
    bundle = (run_dir / variant["onnx"]).parent
    area = variant["prediction_area"]
    instarun = INSTARUN
    out = tmp_path / "out"
    result = subprocess.run([instarun, "predict", str(bundle), "--bbox", ",".join(map(repr, area["bbox"])),
                             "--date", area["date"], "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    stage = (run_dir / report["prediction"]).parent
    for name in ("prediction.tif", "confidence.tif", "rgb.tif"):
        assert (out / name).read_bytes() == (stage / name).read_bytes(), name
    assert not list(out.glob(".partial-*"))  # the temporary folder is gone
    summary = json.loads((out / "prediction.json").read_text())
    assert summary["tiles"] == area["tiles"] and summary["class_pixels"] == area["class_pixels"]

    for args, message in ((["--bbox", "1,2,3"], "--bbox 1,2,3: should be west,south,east,north"),
                          (["--bbox", "40,1,39,2"], "west < east"),
                          (["--date", "2023-13-01"], "--date 2023-13-01: not YYYY-MM-DD")):
        line = {"--bbox": ",".join(map(repr, area["bbox"])), "--date": area["date"]}
        line.update(dict(zip(args[::2], args[1::2])))
        bad = subprocess.run([instarun, "predict", str(bundle), *[v for kv in line.items() for v in kv],
                              "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and message in bad.stderr and "Traceback" not in bad.stderr, bad.stderr
    not_a_bundle = subprocess.run([instarun, "predict", str(tmp_path), "--bbox", "1,1,2,2", "--date", "2023-01-01",
                                   "--out", str(tmp_path / "bad")], capture_output=True, text=True, timeout=60)
    assert not_a_bundle.returncode == 2 and "no bundle.json in this folder" in not_a_bundle.stderr


def test_predict_memory_does_not_grow_with_the_area_and_torch_is_never_imported(demo_bundle, tmp_path):
    """Peak RSS of `instarun predict` over a 4x larger area (a 1536 px demo scene): under 10%
    more, and torch never imported (it cost 650 MiB to look for a GPU). At these sizes the
    mosaic itself is a few MiB, so this guards the per-file and per-thread costs (a 64 MiB
    VSI_CACHE per open file made memory grow with the files an area touches); that the
    mosaic streams one tile row at a time is test_strip_streams_the_mosaic_one_array_would_hold."""
    run_dir, report = demo_bundle
    bundle = (run_dir / report["variants"][0]["onnx"]).parent
    assert main(["demo-data", str(tmp_path / "scene"), "--size", "1536", "--acquisitions", "6",
                 "--points", "10", "--no-quicklook"]) == 0
    peaks = []
    for box in ("40.0,1.2,40.05,1.25", "40.0,1.2,40.1,1.3") * 3:  # 186 px and 372 px squares, three times
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, "predict", str(bundle), "--bbox", box,
                                 "--date", "2023-03-24", "--out", str(tmp_path / box),
                                 "--catalog", str(tmp_path / "scene" / "catalog.json")],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        facts = dict(part.split("=") for part in result.stdout.split()[-2:])
        assert facts["torch"] == "False"
        peaks.append(int(facts["peak_rss_kib"]))
    with rasterio.open(tmp_path / "40.0,1.2,40.1,1.3" / "prediction.tif") as dataset:
        assert dataset.width * dataset.height > 3.9 * 186 * 186
    # the lowest of three runs each: thread timing moves a single peak by +-20 MiB (two were not enough)
    small, large = min(peaks[0::2]), min(peaks[1::2])
    print(f"peak RSS {small / 1024:.0f} MiB -> {large / 1024:.0f} MiB for 4x the area (runs: {peaks})")
    assert large < 1.10 * small, peaks

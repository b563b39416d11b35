"""The export stage: ONNX students that match PyTorch, and self-contained bundles."""

import json
import shutil

import numpy as np
import onnxruntime as ort
import pytest
import torch

from instageo.cli import main
from instageo.model import tasks
from instageo.model.data import load_splits
from tests.conftest import REPO


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), "--set", "student.depth=1,2",
                 "--set", "export.onnx.quantize=true", "--set", "export.onnx.teacher=true",
                 "--set", f"export.predict.areas=[{AREAS[0]},{AREAS[1]}]"]) == 0
    return folder, json.loads((folder / "runs" / "tiny" / "report.json").read_text())


AREAS = ([39.905, 1.415, 39.915, 1.425], [39.92, 1.43, 39.93, 1.44])


def test_onnx_student_matches_pytorch_and_is_in_the_report(tiny):
    folder, report = tiny
    variant = report["variants"][0]
    assert variant["onnx_max_abs_diff"] < 1e-4 and variant["onnx_argmax_agreement"] == 1.0
    onnx_path = folder / "runs" / "tiny" / variant["onnx"]
    assert onnx_path.name == "model.onnx" and onnx_path.is_file()
    assert {"torch_img_s", "onnx_img_s", "onnx_int8_img_s", "speedup"} <= set(variant["throughput"])
    assert abs(variant["int8"]["delta_miou"]) <= 1.0
    # the teacher, exported on request once for both students, and timed beside each
    teacher = report["teacher"]
    assert (folder / "runs" / "tiny" / teacher["onnx"]).is_file() and teacher["onnx_max_abs_diff"] < 1e-4
    assert [s["name"] for s in report["stages"]].count("teacher_export") == 1
    assert teacher["throughput"]["onnx_img_s"] > 0 and teacher["throughput"]["torch_img_s"] > 0
    for each in report["variants"]:
        assert each["throughput"]["teacher_onnx_img_s"] > 0 and each["throughput"]["onnx_vs_teacher_onnx"] > 0


def test_several_areas_each_get_their_cogs_and_an_index_for_students_and_teacher(tiny):
    import rasterio
    from rasterio.warp import transform_bounds

    folder, report = tiny
    run = folder / "runs" / "tiny"
    for owner in (report["teacher"], *report["variants"]):
        index = json.loads((run / owner["prediction_areas"]).read_text())
        assert [f["properties"]["name"] for f in index["features"]] == ["area1", "area2"]
        for area, box, feature in zip(owner["areas"], AREAS, index["features"]):
            with rasterio.open(run / area["prediction"]) as dataset:
                west, south, east, north = transform_bounds(dataset.crs, "EPSG:4326", *dataset.bounds)
                assert dataset.colorinterp[0].name == "palette" and dataset.overviews(1) is not None
            assert west <= box[0] + 1e-3 and east >= box[2] - 1e-3 and south <= box[1] + 1e-3 and north >= box[3] - 1e-3
            assert east - west < 0.02  # its own area, not a mosaic of both
            assert (run / owner["prediction_areas"]).parent / feature["properties"]["prediction"] == run / area["prediction"]
    assert report["prediction"] == report["variants"][0]["areas"][0]["prediction"]
    assert report["teacher"]["prediction"] != report["prediction"]  # the teacher's own map


def test_the_bundle_predicts_on_its_own(tiny):
    folder, report = tiny
    bundle_dir = (folder / "runs" / "tiny" / report["variants"][0]["onnx"]).parent
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    assert bundle["bands"] == ["blue", "green", "red", "nir", "swir16", "swir22"]
    assert bundle["chip"]["steps"] == 2 and bundle["classes"] == ["other", "water", "vegetation"]
    assert len(bundle["mean"]) == 6 and len(bundle["colours"]) == 3
    chips_dir = next((folder / "runs" / "tiny" / "stages").glob("chips-*"))
    test = load_splits(chips_dir, 2, bundle["bands"], False, bundle["mean"], bundle["std"])["test"]
    session = ort.InferenceSession(str(bundle_dir / bundle["model"]), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"chips": test.x[i:i + 3].numpy()})[0] for i in range(0, len(test), 3)])
    depth = report["variants"][0]["student_depth"]
    student, _ = next(loaded for path in (folder / "runs" / "tiny" / "stages").glob("student-*")
                      if (loaded := tasks.load(path / "student.pt"))[1]["depth"] == depth)
    student.eval()
    with torch.no_grad():
        expected = student(test.x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_a_parity_tolerance_too_tight_fails_the_export(tiny, capsys):
    folder, _ = tiny
    code = main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), "--set",
                 "export.onnx.tolerance=1e-30"])
    assert code == 1 and "ONNX output differs from PyTorch by" in capsys.readouterr().err
    assert not [p for p in (folder / "runs" / "tiny" / "stages").glob("export-*")
                if json.loads((p / "manifest.json").read_text())["config"]["export.onnx"]["tolerance"] == 1e-30]

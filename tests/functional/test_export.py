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
                 "--set", "export.onnx.teacher=true",
                 "--set", "export.onnx.float16=true",
                 "--set", f"export.predict.areas=[{AREAS[0]},{AREAS[1]}]"]) == 0
    return folder, json.loads((folder / "runs" / "tiny" / "report.json").read_text())


AREAS = ([39.905, 1.415, 39.915, 1.425], [39.92, 1.43, 39.93, 1.44])


def test_the_float16_twin_is_float16_inside_float32_outside_and_agrees_with_pytorch(tiny):
    """The onnx library reads the file's own types: weights float16, inputs and outputs
    float32; onnxruntime runs it and its classes agree with PyTorch's (the bundle's figures
    are checked here again, independently); on a GPU it is the model predict takes."""
    import onnx

    from instageo.engine.runtime import choose_model

    folder, report = tiny
    variant = report["variants"][0]
    bundle_dir = (folder / "runs" / "tiny" / variant["onnx"]).parent
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    graph = onnx.load(str(bundle_dir / bundle["model_fp16"])).graph
    weights = [w for w in graph.initializer if len(w.dims) >= 2]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert {v.type.tensor_type.elem_type for v in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT}
    chips_dir = next((folder / "runs" / "tiny" / "stages").glob("chips-*"))
    test = load_splits(chips_dir, 2, bundle["bands"], False, bundle["normalization"]["mean"],
                       bundle["normalization"]["std"])["test"]
    student, _ = next(loaded for path in (folder / "runs" / "tiny" / "stages").glob("student-*")
                      if (loaded := tasks.load(path / "student.pt"))[1]["depth"] == variant["student_depth"])
    with torch.no_grad():
        expected = student.eval()(test.x).numpy()
    session = ort.InferenceSession(str(bundle_dir / bundle["model_fp16"]), providers=["CPUExecutionProvider"])
    got = session.run(None, {"chips": test.x.numpy()})[0]
    assert got.dtype == np.float32 and (got.argmax(1) == expected.argmax(1)).mean() >= 0.99
    assert np.abs(got - expected).max() < 0.05
    assert bundle["float16"]["argmax_agreement"] >= 0.99 and bundle["float16"]["max_abs_diff"] < 0.05
    assert choose_model(bundle, 0.5, gpu=True)[0] == "model.fp16.onnx"
    assert choose_model(dict(bundle, float16={"max_abs_diff": 1.0, "argmax_agreement": 0.9}), 0.5,
                        gpu=True)[0] == "model.onnx"
    assert choose_model({**bundle, "model_fp16": None, "float16": None}, 0.5, gpu=True)[0] == "model.onnx"


def test_int8_by_default_scored_on_val_and_test_as_sklearn_scores_it(tiny):
    """With the recipe's defaults the bundle carries an int8 model; its float32 and int8 mIoU
    on val and test are recomputed here with a plain onnxruntime session and sklearn's
    jaccard_score (over the classes the labels hold), and report.md prints them."""
    from sklearn.metrics import jaccard_score

    folder, report = tiny
    variant = report["variants"][0]
    bundle_dir = (folder / "runs" / "tiny" / variant["onnx"]).parent
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    assert bundle["model_int8"] == "model.int8.onnx" and (bundle_dir / "model.int8.onnx").is_file()
    chips_dir = next((folder / "runs" / "tiny" / "stages").glob("chips-*"))
    splits = load_splits(chips_dir, bundle["chip"]["steps"], bundle["bands"], False, bundle["normalization"]["mean"],
                         bundle["normalization"]["std"])
    for split in ("val", "test"):
        y = splits[split].y.numpy()
        labelled = y != bundle["ignore_index"]
        for precision, file in (("float32", "model.onnx"), ("int8", "model.int8.onnx")):
            session = ort.InferenceSession(str(bundle_dir / file), providers=["CPUExecutionProvider"])
            predicted = session.run(None, {"chips": splits[split].x.numpy()})[0].argmax(1)
            expected = jaccard_score(y[labelled], predicted[labelled], labels=np.unique(y[labelled]), average="macro")
            assert bundle["int8"][split][precision] == pytest.approx(expected, abs=1e-6), (split, precision)
    markdown = (folder / "runs" / "tiny" / "report.md").read_text()
    table = markdown.split("## int8 against float32", 1)[1]
    assert f"| {variant['name']} | {bundle['int8']['val']['float32']:.4f} | {bundle['int8']['val']['int8']:.4f} |" in table


def test_onnx_student_matches_pytorch_and_is_in_the_report(tiny):
    folder, report = tiny
    variant = report["variants"][0]
    assert variant["onnx_max_abs_diff"] < 1e-4 and variant["onnx_argmax_agreement"] == 1.0
    onnx_path = folder / "runs" / "tiny" / variant["onnx"]
    assert onnx_path.name == "model.onnx" and onnx_path.is_file()
    int8 = variant["int8"]
    assert int8["metric"] == "miou" and abs(int8["test"]["delta"]) <= 1.0 and abs(int8["val"]["delta"]) <= 1.0
    assert int8["test"]["float32"] == pytest.approx(variant["metrics"]["miou"], abs=0.02)  # ONNX vs PyTorch argmax
    # the predict stage ran the model its rule picks (on val), and says so
    from instageo.engine.runtime import choose_model

    bundle = json.loads(onnx_path.with_name("bundle.json").read_text())
    assert bundle["int8"] == int8
    model, why = choose_model(bundle, 0.5)
    assert all(a["model"] == model and a["model_why"] == why for a in variant["areas"])
    assert model != bundle["model_fp16"]  # no GPU here: float16 is for GPUs
    # the teacher, exported on request once for both students
    teacher = report["teacher"]
    assert (folder / "runs" / "tiny" / teacher["onnx"]).is_file() and teacher["onnx_max_abs_diff"] < 1e-4
    assert [s["name"] for s in report["stages"]].count("teacher_export") == 1
    # one measurement of every model and runtime, side by side, in the speed stage
    assert [s["name"] for s in report["stages"]].count("speed") == 1
    for each in report["variants"]:
        speed = report["speed"]["variants"][each["name"]]
        assert {"torch", "onnx", "int8", "teacher_torch", "teacher_onnx"} <= set(speed)
        for runtime in ("torch", "onnx"):
            # the median of the rounds' paired ratios: inside what the slowest and fastest rounds allow
            mine, theirs = speed[runtime], speed[f"teacher_{runtime}"]
            assert mine["min"] / theirs["max"] - 1e-3 <= speed[f"speedup_{runtime}"] <= mine["max"] / theirs["min"] + 1e-3
            assert speed[runtime]["min"] <= speed[runtime]["median"] <= speed[runtime]["max"]
        assert each["throughput"]["torch_img_s"] == speed["torch"]["median"]  # DESIGN.md's field, the same figure


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
    assert len(bundle["normalization"]["mean"]) == 6 and len(bundle["colours"]) == 3
    chips_dir = next((folder / "runs" / "tiny" / "stages").glob("chips-*"))
    test = load_splits(chips_dir, 2, bundle["bands"], False, bundle["normalization"]["mean"], bundle["normalization"]["std"])["test"]
    session = ort.InferenceSession(str(bundle_dir / bundle["model"]), providers=["CPUExecutionProvider"])
    got = np.concatenate([session.run(None, {"chips": test.x[i:i + 3].numpy()})[0] for i in range(0, len(test), 3)])
    depth = report["variants"][0]["student_depth"]
    student, _ = next(loaded for path in (folder / "runs" / "tiny" / "stages").glob("student-*")
                      if (loaded := tasks.load(path / "student.pt"))[1]["depth"] == depth)
    student.eval()
    with torch.no_grad():
        expected = student(test.x).numpy()
    assert got.shape == expected.shape and np.abs(got - expected).max() < 1e-4


def test_plain_onnxruntime_with_only_bundle_json_reproduces_the_stage_test_metrics(tiny):
    """A program that knows nothing of instageo: rasterio reads the test chips, bundle.json's
    documented fields say how to lay them out and normalise them, onnxruntime runs the model,
    scikit-learn scores it; the confusion matrix is the one in the bundle (and the report)."""
    import csv
    import datetime as dt

    import rasterio
    from sklearn.metrics import confusion_matrix, jaccard_score

    folder, report = tiny
    bundle_dir = (folder / "runs" / "tiny" / report["variants"][0]["onnx"]).parent
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    chips_dir = next((folder / "runs" / "tiny" / "stages").glob("chips-*"))
    bands, steps, norm = bundle["bands"], bundle["chip"]["steps"], bundle["normalization"]
    mean = np.array(norm["mean"], np.float32)[:, None, None, None]
    std = np.array(norm["std"], np.float32)[:, None, None, None]
    session = ort.InferenceSession(str(bundle_dir / bundle["model"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == [t["name"] for t in bundle["inputs"]]
    predicted, truth = [], []
    for row in csv.DictReader(open(chips_dir / "index.csv")):
        if row["split"] != bundle["metrics_split"]:
            continue
        with rasterio.open(chips_dir / row["image"]) as dataset:  # step-major, as chip.file.layout says
            assert dataset.descriptions[1] == f"t0_{bands[1]}"
            image = dataset.read().reshape(steps, len(bands), dataset.height, dataset.width).transpose(1, 0, 2, 3)
        x = np.nan_to_num((image - mean) / std, nan=0.0)[None].astype(np.float32)  # nodata: 0 after normalising
        feeds = {"chips": x}
        if bundle["coordinates"]:
            days = [dt.date.fromisoformat(d) for d in row["dates"].split(";")]
            feeds["temporal_coords"] = np.array([[[d.year, d.timetuple().tm_yday] for d in days]], np.float32)
            feeds["location_coords"] = np.array([[float(row["lat"]), float(row["lon"])]], np.float32)
        (logits,) = session.run([bundle["output"]["name"]], feeds)
        with rasterio.open(chips_dir / row["label"]) as dataset:
            label = dataset.read(1)
        labelled = label != bundle["ignore_index"]
        predicted.append(logits[0].argmax(0)[labelled])
        truth.append(label[labelled])
    predicted, truth = np.concatenate(predicted), np.concatenate(truth).astype(np.int64)
    classes = list(range(len(bundle["classes"])))
    metrics = bundle["metrics"]
    assert confusion_matrix(truth, predicted, labels=classes).tolist() == metrics["confusion"]
    iou = jaccard_score(truth, predicted, labels=classes, average=None, zero_division=0)
    assert round(float(iou[np.isin(classes, truth)].mean()), 6) == metrics["miou"]
    assert metrics == report["variants"][0]["metrics"] and metrics["pixels"] == len(truth)


def test_report_and_bundle_match_their_published_schemas(tiny):
    """jsonschema (Draft 2020-12) checks the files a real run wrote against schemas/."""
    import jsonschema

    folder, report = tiny
    bundle_dir = (folder / "runs" / "tiny" / report["variants"][0]["onnx"]).parent
    for name, document in (("report", report), ("bundle", json.loads((bundle_dir / "bundle.json").read_text()))):
        schema = json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        jsonschema.validate(document, schema, cls=jsonschema.Draft202012Validator)
    broken = dict(report, status="fine")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, json.loads((REPO / "schemas" / "report.schema.json").read_text()))


def test_the_bundle_is_a_stac_item_with_the_mlm_extension_as_its_authors_define_it(tiny):
    """bundle/item.json checked by stac-pydantic (STAC core) and stac-model (the MLM
    extension's models, by the extension's authors), not by the code that wrote it."""
    from pydantic import ValidationError
    from stac_model.schema import MLModelProperties
    from stac_pydantic import Item

    folder, report = tiny
    bundle_dir = (folder / "runs" / "tiny" / report["variants"][0]["onnx"]).parent
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    item = json.loads((bundle_dir / "item.json").read_text())
    Item.model_validate(item)
    mlm = {k: v for k, v in item["properties"].items() if k.startswith("mlm:")}
    properties = MLModelProperties.model_validate(mlm)
    assert properties.framework == "ONNX" and properties.total_parameters == report["variants"][0]["params"]
    (chips,) = mlm["mlm:input"]
    assert chips["bands"] == bundle["bands"] and chips["input"]["shape"][1:] == [6, 2, 16, 16]
    assert [v["mean"] for v in chips["value_scaling"]] == bundle["normalization"]["mean"]
    assert [c["name"] for c in mlm["mlm:output"][0]["classification:classes"]] == bundle["classes"]
    assert {"model", "model_int8", "bundle"} <= set(item["assets"])
    assert all((bundle_dir / asset["href"]).is_file() for asset in item["assets"].values())
    broken = dict(mlm, **{"mlm:input": [dict(chips, value_scaling=chips["value_scaling"][0])]})
    with pytest.raises(ValidationError):  # the validator does catch what pystac 1.15 would have written
        MLModelProperties.model_validate(broken)


def test_a_parity_tolerance_too_tight_fails_the_export(tiny, capsys):
    folder, _ = tiny
    code = main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), "--set",
                 "export.onnx.tolerance=1e-30"])
    assert code == 1 and "ONNX output differs from PyTorch by" in capsys.readouterr().err
    assert not [p for p in (folder / "runs" / "tiny" / "stages").glob("export-*")
                if json.loads((p / "manifest.json").read_text())["config"]["export.onnx"]["tolerance"] == 1e-30]

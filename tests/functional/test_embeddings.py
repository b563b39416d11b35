"""Compressed embeddings of the demo: decoded from the COG as a user would (the sidecar's
rules), probed with scikit-learn's logistic regression (the reference), against float32."""

import csv
import json

import numpy as np
import pytest
import rasterio

from instageo.cli import main
from tests.conftest import REPO

TRAINING = ["--set", "student.depth=1", "--set", "teacher.train.epochs=4", "--set", "student.train.epochs=4"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The demo to its embeddings twice: int8 at 64 dims (the defaults), and float32 at the
    encoder's full dimension (192: 3 steps x 64) as the reference."""
    folder = tmp_path_factory.mktemp("embeddings") / "runs"
    for setting in ("export.embeddings={}", "export.embeddings={dims: 192, quantize: none}"):
        assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(folder), *TRAINING, "--set", setting,
                     "--until", "embeddings"]) == 0
    stages = folder / "demo" / "stages"
    found = {}
    for stage in stages.glob("embeddings-*"):
        sidecar = json.loads((stage / "embeddings.json").read_text())
        found[sidecar["quantize"]] = stage
    return stages, found


def labelled_pixels(stages, split: str):
    """(x, y, class) of every labelled pixel of a split's chips, in the chips' CRS."""
    chips = next(stages.glob("chips-*"))
    found = []
    with open(chips / "index.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["split"] != split:
                continue
            with rasterio.open(chips / row["label"]) as label:
                values = label.read(1)
                rows, columns = np.nonzero(values >= 0)
                xs, ys = rasterio.transform.xy(label.transform, rows, columns)
                found += list(zip(xs, ys, values[rows, columns]))
    return np.array(found)


def decoded_at(stage, points) -> np.ndarray:
    """The COG's vectors at points, decoded by the sidecar's rule (None rows: no data)."""
    sidecar = json.loads((stage / "embeddings.json").read_text())
    with rasterio.open(stage / "embeddings.tif") as cog:
        codes = cog.read()
        columns, rows = (~cog.transform * (points[:, 0], points[:, 1]))
    codes = codes[:, rows.astype(int), columns.astype(int)].T
    if sidecar["quantize"] == "int8":
        assert sidecar["decode"].startswith("value = code / 127") and sidecar["nodata"] == -128
        return np.where((codes == -128).any(1, keepdims=True), np.nan, codes / 127.0)
    return codes.astype(np.float64)


def probe(stage, stages) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    train, test = labelled_pixels(stages, "train"), labelled_pixels(stages, "test")
    x_train, x_test = decoded_at(stage, train), decoded_at(stage, test)
    keep_train, keep_test = ~np.isnan(x_train).any(1), ~np.isnan(x_test).any(1)
    assert keep_train.mean() > 0.9 and keep_test.mean() > 0.9  # the chips lie in the area
    scaler = StandardScaler().fit(x_train[keep_train])
    model = LogisticRegression(max_iter=2000).fit(scaler.transform(x_train[keep_train]), train[keep_train, 2])
    return model.score(scaler.transform(x_test[keep_test]), test[keep_test, 2])


def test_int8_embeddings_lose_under_1pp_and_are_16x_smaller_than_float32(runs):
    stages, found = runs
    assert set(found) == {"int8", "none"}
    with rasterio.open(found["int8"] / "embeddings.tif") as cog:
        assert cog.count == 64 and cog.dtypes[0] == "int8" and cog.nodata == -128
        assert cog.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and cog.res == (120.0, 120.0)  # 30 m x patch 4
        codes = cog.read()
        patches = cog.width * cog.height
    valid = (codes != -128).all(0)
    norms = np.sqrt(((codes[:, valid] / 127.0) ** 2).sum(0))
    assert valid.mean() > 0.5 and np.allclose(norms, 1, atol=0.02)  # unit vectors, up to rounding
    float32_full = patches * 192 * 4
    assert float32_full / (found["int8"] / "embeddings.tif").stat().st_size >= 16

    int8, full = probe(found["int8"], stages), probe(found["none"], stages)
    assert full > 0.6  # the reference probe learns something
    # a loss is what compression may not cost; the 64-dim probe can also score above the 192-dim
    # one (fewer weights on a few hundred labelled pixels: 0.890 vs 0.860 with the mosaic)
    assert int8 >= full - 0.01, (int8, full)


def test_the_export_stage_probe_agrees_with_scikit_learn_on_the_same_features(runs):
    """Our probe (torch L-BFGS) on the chips' float32 features against scikit-learn's on the
    same features, computed here with ONNX Runtime from bundle/encoder.onnx."""
    import onnxruntime as ort
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from instageo.recipe.loader import load_recipe
    from instageo.model import tasks
    from instageo.runner.stage import StageResult

    stages, _ = runs
    exports = {json.loads((p / "manifest.json").read_text())["summary"]["embeddings"]["dims"]: p
               for p in stages.glob("export-*")}
    export = exports[64]
    summary = json.loads((export / "manifest.json").read_text())["summary"]["embeddings"]
    chips_dir = next(stages.glob("chips-*"))
    chips_manifest = json.loads((chips_dir / "manifest.json").read_text())
    recipe = load_recipe(REPO / "recipes" / "demo.yaml")
    chips = StageResult("chips", chips_manifest["key"], chips_dir, chips_manifest["files"], chips_manifest["summary"])
    bundle = json.loads((export / "bundle" / "bundle.json").read_text())
    data = tasks.splits(recipe, chips, bundle["normalization"])
    session = ort.InferenceSession(str(export / "bundle" / "encoder.onnx"), providers=["CPUExecutionProvider"])

    def pixels(split):
        features = session.run(None, {"chips": split.x.numpy()})[0]
        upsampled = features.repeat(4, axis=2).repeat(4, axis=3)
        labels = split.y.numpy()
        keep = labels >= 0
        return upsampled.transpose(0, 2, 3, 1)[keep], labels[keep]

    (x_train, y_train), (x_test, y_test) = pixels(data["train"]), pixels(data[summary["probe_split"]])
    scaler = StandardScaler().fit(x_train)
    reference = LogisticRegression(max_iter=3000).fit(scaler.transform(x_train), y_train).score(
        scaler.transform(x_test), y_test)
    assert summary["probe_accuracy"]["float32"] == pytest.approx(reference, abs=0.02)
    assert summary["compression"]["int8"] == 12 and summary["compression"]["binary"] == 96  # 768 B per vector


def test_the_teachers_embeddings_are_mapped_once_for_the_sweep(tmp_path, capsys):
    import shutil

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    base = [str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--set", "student.depth=[1,2]",
            "--set", "export.embeddings={model: teacher}"]
    assert main([*base, "--until", "teacher_embeddings"]) == 2  # the teacher's encoder is exported with it
    assert "export.embeddings.model 'teacher' needs export.onnx.teacher: true" in capsys.readouterr().err
    assert main([*base, "--set", "export.onnx.teacher=true"]) == 0
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    names = [stage["name"] for stage in report["stages"]]
    assert names.count("teacher_embeddings") == 1 and "embeddings" not in names
    cog = run / report["teacher"]["embeddings_map"]
    sidecar = json.loads(cog.with_name("embeddings.json").read_text())
    assert sidecar["model"].endswith("depth 4 encoder (bundle/encoder.onnx)")  # the CI teacher's 4 blocks
    with rasterio.open(cog) as dataset:
        assert dataset.count == 64 and dataset.dtypes[0] == "int8"
    assert "| teacher |" in (run / "report.md").read_text()

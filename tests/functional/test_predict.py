"""The predict stage: the exported student over the area, as valid COGs."""

import json
import shutil

import numpy as np
import rasterio
from rasterio.shutil import exists

from instageo.cli import main
from instageo.deploy.predict import blend_window
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
    values = set(np.unique(classes).tolist())
    assert values <= {0, 1, 2, 255} and len(values - {255}) >= 2
    with rasterio.open(confidence) as dataset:
        probability = dataset.read(1)
    labelled = classes != 255
    assert np.all((probability[labelled] > 1 / 3 - 1e-6) & (probability[labelled] <= 1 + 1e-6))
    assert report["variants"][0]["prediction_area"]["tiles"] > 10


def test_blend_window_ramps_only_in_the_overlap():
    window = blend_window(16, 4)
    assert window[8, 8] == 1 and 0 < window[0, 8] < window[2, 8] < 1
    assert np.allclose(window, window.T) and np.allclose(window, window[::-1, ::-1])


def test_an_area_too_large_for_memory_is_refused_before_reading(tmp_path, capsys):
    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    code = main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"),
                 "--set", "export.predict.bbox=[30.0,-10.0,50.0,10.0]"])
    assert code == 2
    assert "set export.predict.bbox to a smaller area" in capsys.readouterr().err

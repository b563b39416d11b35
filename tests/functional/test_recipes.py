"""The shipped recipes: tiny.yaml runs the whole pipeline (our smoke test and CI pattern)."""

import json
import shutil

from instageo.cli import main
from instageo.pipeline import default_pipeline
from tests.conftest import REPO


def test_tiny_recipe_runs_every_stage_then_nothing(tmp_path):
    recipe = tmp_path / "tiny.yaml"  # a copy, so the run's lock file lands in tmp_path
    shutil.copy(REPO / "recipes" / "tiny.yaml", recipe)
    runs = tmp_path / "runs"
    assert main([str(recipe), "--runs-dir", str(runs)]) == 0
    report = json.loads((runs / "tiny" / "report.json").read_text())
    assert report["status"] == "ok"
    optional = {"teacher_export", "teacher_predict", "teacher_embeddings"}  # only with export.onnx.teacher
    wanted = [stage.name for stage in default_pipeline() if stage.name not in optional]
    assert [s["name"] for s in report["stages"]] == wanted
    assert not any(s["cached"] for s in report["stages"])
    assert report["dataset"]["search"]["observations"] == 40
    assert (tmp_path / "tiny.lock.json").exists()

    assert main([str(recipe), "--runs-dir", str(runs)]) == 0
    again = json.loads((runs / "tiny" / "report.json").read_text())
    assert all(s["cached"] for s in again["stages"])


def test_an_earthdata_token_never_lands_in_any_file_a_run_writes(tmp_path, monkeypatch):
    token = "edl-token-5f1c2a9e-do-not-write"
    monkeypatch.setenv("EARTHDATA_TOKEN", token)  # the hls preset sends it when reading
    recipe = tmp_path / "tiny.yaml"
    shutil.copy(REPO / "recipes" / "tiny.yaml", recipe)
    assert main([str(recipe), "--runs-dir", str(tmp_path / "runs")]) == 0
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) > 50
    assert not [p for p in written if token.encode() in p.read_bytes()]

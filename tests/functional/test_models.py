"""Teacher and student stages on the tiny recipe: determinism, resume, checkpoints, report."""

import json
import shutil

import numpy as np
import pytest
import torch

from instageo.cli import main
from instageo.model import tasks
from instageo.model.data import load_splits
from instageo.model.train import fit
from instageo.progress import Bar, Progress
from instageo.recipe import load_recipe
from instageo.recipe.models import TrainSpec
from tests.conftest import REPO
from tests.unit.test_model import fake_prithvi


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    shutil.copy(REPO / "recipes" / "tiny.yaml", folder / "tiny.yaml")
    assert main([str(folder / "tiny.yaml"), "--runs-dir", str(folder / "runs"), "--set", "student.depth=1,2"]) == 0
    return folder


def stage_dir(folder, name):
    return sorted((folder / "runs" / "tiny" / "stages").glob(f"{name}-*"))


def test_teacher_and_students_report_metrics_cost_and_speed(tiny):
    report = json.loads((tiny / "runs" / "tiny" / "report.json").read_text())
    teacher = report["teacher"]
    assert 0 <= teacher["metrics"]["miou"] <= 1 and teacher["params"] > 0 and teacher["gflops"] > 0
    depths = [v["student_depth"] for v in report["variants"]]
    assert depths == [1, 2]
    params = [v["params"] for v in report["variants"]]
    assert params[0] < params[1] < teacher["params"]
    assert all(report["speed"]["variants"][v["name"]]["speedup_torch"] > 0 for v in report["variants"])
    markdown = (tiny / "runs" / "tiny" / "report.md").read_text()
    assert "## Students" in markdown and "![mIoU and speed-up against depth](sweep.png)" in markdown
    assert (tiny / "runs" / "tiny" / "sweep.png").stat().st_size > 5000
    assert len(stage_dir(tiny, "teacher")) == 1 and len(stage_dir(tiny, "student")) == 2
    assert not {"teacher_export", "teacher_predict"} & {s["name"] for s in report["stages"]}  # not asked for


def test_student_blocks_start_from_the_teacher(tiny):
    teacher, _ = tasks.load(stage_dir(tiny, "teacher")[0] / "teacher.pt")
    student, meta = tasks.load(next(p / "student.pt" for p in stage_dir(tiny, "student")
                                    if tasks.load(p / "student.pt")[1]["depth"] == 1))
    assert meta["depth"] == 1 and len(student.encoder.blocks) == 1
    assert student.encoder.patch_embed.proj.weight.shape == teacher.encoder.patch_embed.proj.weight.shape


def _fit(tiny, workdir, bar, **train):
    recipe = load_recipe(tiny / "tiny.yaml")
    chips = stage_dir(tiny, "chips")[0]
    stats = json.loads((chips / "stats.json").read_text())
    data = load_splits(chips, 2, list(recipe.data.chips.bands), False, stats["mean"], stats["std"])
    torch.manual_seed(0)
    model = tasks.build({"backbone": "instageo_ci", "in_chans": 6, "frames": 2, "outputs": 3,
                         "head": "upsample", "depth": 4})
    result_chips = type("R", (), {"path": lambda self, name: chips / "stats.json"})()
    spec = TrainSpec(epochs=3, batch_size=8, lr=1e-3, patience=10, **train)
    import logging
    return fit(model, data, spec, tasks.supervised_loss(recipe, result_chips), tasks.val_score(recipe),
               0, workdir, bar, logging.getLogger("test"))


def test_training_is_deterministic_and_resumes_per_epoch(tiny, tmp_path):
    plain = Progress(enabled=False).bar
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir(), (tmp_path / "c").mkdir()
    first = _fit(tiny, tmp_path / "a", plain)
    second = _fit(tiny, tmp_path / "b", plain)
    assert first.history == [dict(h, seconds=s["seconds"]) for h, s in zip(second.history, first.history)]

    class KilledAfterOneEpoch(Bar):  # the first epoch's note comes after its state is saved
        def note(self, text):
            raise KeyboardInterrupt

    def killed_after_one_epoch(description, total):
        return KilledAfterOneEpoch(Progress(enabled=False), description, total)

    with pytest.raises(KeyboardInterrupt):
        _fit(tiny, tmp_path / "c", killed_after_one_epoch)
    resumed = _fit(tiny, tmp_path / "c", plain)
    for key, value in first.state.items():
        assert torch.equal(value, resumed.state[key]), key


def test_the_weight_average_is_what_is_scored_and_kept_and_it_resumes_too(tiny, tmp_path):
    """train.ema keeps torch's AveragedModel of the weights: the kept state is not the last
    raw weights, a killed run resumes to the same average, and without augmentation the run
    is another one."""
    plain = Progress(enabled=False).bar
    for name in "abcd":
        (tmp_path / name).mkdir()
    averaged = _fit(tiny, tmp_path / "a", plain, ema=0.5)
    raw = torch.load(tmp_path / "a" / "train_state.pt", weights_only=False)["model"]
    assert any(not torch.equal(raw[k], v) for k, v in averaged.state.items() if v.is_floating_point())

    class KilledAfterOneEpoch(Bar):
        def note(self, text):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _fit(tiny, tmp_path / "b", lambda d, t: KilledAfterOneEpoch(Progress(enabled=False), d, t), ema=0.5)
    resumed = _fit(tiny, tmp_path / "b", plain, ema=0.5)
    assert all(torch.equal(v, resumed.state[k]) for k, v in averaged.state.items())
    assert resumed.history == [dict(h, seconds=r["seconds"]) for h, r in zip(averaged.history, resumed.history)]
    unaugmented, augmented = _fit(tiny, tmp_path / "c", plain, augment=False), _fit(tiny, tmp_path / "d", plain)
    assert unaugmented.history[0]["loss"] != augmented.history[0]["loss"]


def test_a_checkpoint_that_does_not_fit_stops_before_training(tiny, tmp_path, capsys):
    import dataclasses

    from instageo.model.backbone import PrithviEncoder
    from instageo.recipe.backbones import BACKBONES

    wide = dataclasses.replace(BACKBONES["instageo_ci"], embed_dim=32, num_heads=2)
    torch.save(PrithviEncoder(wide, 6).state_dict(), tmp_path / "wrong.pt")
    shutil.copy(tiny / "tiny.yaml", tmp_path / "tiny.yaml")
    runs = ["--runs-dir", str(tiny / "runs")]
    assert main([str(tmp_path / "tiny.yaml"), *runs, "--set", "teacher.weights=wrong.pt"]) == 2
    assert "wrong.pt: checkpoint does not fit backbone: cls_token (1, 1, 32) != (1, 1, 64)" in capsys.readouterr().err

    checkpoint = {"model": {f"encoder.{k}": v for k, v in PrithviEncoder(BACKBONES["instageo_ci"], 6).state_dict().items()}}
    checkpoint["model"]["encoder.blocks.1.ls1.gamma"] = torch.ones(64)  # a tensor our backbone lacks
    torch.save(checkpoint, tmp_path / "extra.pt")
    assert main([str(tmp_path / "tiny.yaml"), *runs, "--set", "teacher.weights=extra.pt"]) == 2
    err = capsys.readouterr().err
    assert "extra.pt: unexpected encoder tensor blocks.1.ls1.gamma" in err and "Traceback" not in err

    fake_prithvi("v2", tmp_path / "prithvi_v2.pt")
    assert main([str(tmp_path / "tiny.yaml"), *runs, "--set", "teacher.weights=prithvi_v2.pt", "--until", "teacher"]) == 0


def test_a_tl_teacher_from_an_official_checkpoint_runs_to_the_map(tiny, tmp_path):
    """Prithvi-EO-2.0 tiny TL, saved by the official code, fine-tuned with its pretraining
    statistics and its coordinates (dates, chip centres) through to ONNX and the map."""
    import onnxruntime as ort

    from tests.reference import prithvi_configs, prithvi_mae

    config = {**prithvi_configs()["prithvi_eo_v2_tiny_tl"], "num_frames": 2, "in_chans": 6, "img_size": 224}
    torch.manual_seed(0)
    torch.save(prithvi_mae().PrithviMAE(**config).state_dict(), tmp_path / "tiny_tl.pt")
    shutil.copy(tiny / "tiny.yaml", tmp_path / "tiny.yaml")
    assert main([str(tmp_path / "tiny.yaml"), "--runs-dir", str(tmp_path / "runs"), "--set",
                 "teacher.backbone=prithvi_eo_v2_tiny_tl", "--set", "teacher.weights=tiny_tl.pt"]) == 0
    run = tmp_path / "runs" / "tiny"
    report = json.loads((run / "report.json").read_text())
    norm = report["teacher"]["normalization"]
    assert set(norm["source"].values()) == {"pretrained"} and norm["mean"][0] == pytest.approx(0.1087)
    bundle_path = run / report["variants"][0]["onnx"]
    bundle = json.loads((bundle_path.parent / "bundle.json").read_text())
    assert bundle["coordinates"] and bundle["normalization"]["mean"] == norm["mean"]
    session = ort.InferenceSession(str(bundle_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["chips", "temporal_coords", "location_coords"]
    assert report["variants"][0]["onnx_max_abs_diff"] < 1e-4 and (run / report["prediction"]).is_file()


def test_sen1floods11_teacher_beats_otsu_on_held_out_scenes_in_every_seed(tmp_path):
    """Test = two named scenes (split.test.files); val = spatial blocks of the rest; three
    seeds. The teacher beats a global Otsu threshold on VV (fitted on the train chips) on the
    held-out chips in every seed; settings were chosen on val, never on these."""
    from tests.sen1floods11 import HELD_OUT, held_out_run, summary_line

    result = held_out_run(tmp_path, [0, 1, 2])
    print(summary_line(result))
    rows = result["rows"]
    scene = {r["chip_id"]: r["observation"].rsplit("_", 1)[0] for r in rows}
    assert {r["chip_id"] for r in rows if r["split"] == "test"} == {c for c, s in scene.items() if s in HELD_OUT}
    assert len(scene) == len(rows)  # no chip in two splits
    assert all(t["metrics"]["pixels"] == result["test_pixels"] for t in result["report"]["teacher"]["seeds"])
    assert all(teacher > result["otsu"] for teacher in result["teacher"])
    # the report's own VV baseline is that Otsu threshold (it reads a gap as the band mean)
    shown = result["report"]["teacher"]["baselines"]["otsu_vv"]["metrics"]
    assert shown["miou"] == pytest.approx(result["otsu"], abs=0.01) and shown["pixels"] == result["test_pixels"]
    assert result["report"]["teacher"]["metrics_spread"]["miou"] > 0
    check_holdout_prediction_matches_chip_metrics(tmp_path, result["stage"], "Spain_7370579")


def check_holdout_prediction_matches_chip_metrics(folder, chips_dir, scene: str) -> None:
    """The predict stage over one held-out scene scores (against its hand labels) what the
    exported ONNX student scores on that scene's test chips: tiling, blending and COG writing
    lose nothing."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    from instageo.deploy import onnx
    from instageo.model.data import load_splits
    from instageo.model.metrics import segmentation_metrics
    from tests.sen1floods11 import SHARED_DATA

    label_path = SHARED_DATA / "sen1floods11" / f"{scene}_LabelHand.tif"
    date = next(line.split(",")[1].strip() for line in open(folder / "label_dates.csv") if line.startswith(scene))
    with rasterio.open(label_path) as labels:
        from rasterio.warp import transform_bounds

        bbox = transform_bounds(labels.crs, "EPSG:4326", *labels.bounds)
    runs = ["--runs-dir", str(folder / "runs")]
    assert main([str(folder / "floods.yaml"), *runs, "--set", "seed=0",
                 "--set", f"export.predict.bbox=[{','.join(map(str, bbox))}]",
                 "--set", f"export.predict.date={date}", "--set", "export.viewer.zoom=[12,13]"]) == 0
    report = json.loads((folder / "runs" / "floods" / "report.json").read_text())
    bundle = folder / "runs" / "floods" / report["variants"][0]["onnx"]

    norm = json.loads((bundle.parent / "bundle.json").read_text())
    test = load_splits(chips_dir, 1, ["vv", "vh"], False, norm["normalization"]["mean"], norm["normalization"]["std"])["test"]
    mine = [i for i, chip_id in enumerate(test.ids) if chip_id.startswith(scene)]
    logits = onnx.run(onnx.session(bundle), (test.x[mine].numpy(),))
    truth = test.y[mine].numpy()
    labelled = truth != -1
    on_chips = segmentation_metrics(logits.argmax(1)[labelled], truth[labelled], 2)["miou"]

    with rasterio.open(folder / "runs" / "floods" / report["prediction"]) as dataset:
        predicted = dataset.read(1)
        truth_on_map = np.full(predicted.shape, -1, np.int16)
        with rasterio.open(label_path) as labels:
            reproject(rasterio.band(labels, 1), truth_on_map, dst_transform=dataset.transform,
                      dst_crs=dataset.crs, resampling=Resampling.nearest, dst_nodata=-1)
    scored = (truth_on_map != -1) & (predicted != 255)
    assert scored.sum() > 0.8 * (truth_on_map != -1).sum()  # the map covers the labelled scene
    on_map = segmentation_metrics(predicted[scored].astype(np.int64), truth_on_map[scored].astype(np.int64), 2)["miou"]
    print(f"{scene}: mIoU of the ONNX student on its test chips {on_chips:.3f}, of the prediction map {on_map:.3f}")
    assert abs(on_map - on_chips) < 0.03

    # radar's input layer: false colour whose red is VV, read against the real S1 chip itself
    with rasterio.open(folder / "runs" / "floods" / report["prediction"].replace("prediction.tif", "rgb.tif")) as rgb:
        assert rgb.descriptions[0] == "false colour (VV, VH, VV-VH)"
        red, green = rgb.read(1), rgb.read(2)
        vv_on_map = np.full(red.shape, np.nan, np.float32)
        with rasterio.open(SHARED_DATA / "sen1floods11" / f"{scene}_S1Hand.tif") as s1:
            reproject(rasterio.band(s1, 1), vv_on_map, dst_transform=rgb.transform, dst_crs=rgb.crs,
                      resampling=Resampling.nearest, dst_nodata=np.nan)
    seen = (red > 0) & np.isfinite(vv_on_map)
    assert seen.mean() > 0.5 and np.corrcoef(red[seen], vv_on_map[seen])[0, 1] > 0.9
    assert np.corrcoef(green[seen], vv_on_map[seen])[0, 1] < np.corrcoef(red[seen], vv_on_map[seen])[0, 1]


def test_feature_matching_and_regression_run_through(tiny, tmp_path):
    shutil.copy(tiny / "tiny.yaml", tmp_path / "tiny.yaml")
    runs = ["--runs-dir", str(tmp_path / "runs")]
    assert main([str(tmp_path / "tiny.yaml"), *runs, "--set", "student.distill.feature_weight=0.5"]) == 0
    assert main([str(tmp_path / "tiny.yaml"), *runs, "--set", "task.kind=regression"]) == 0
    report = json.loads((tmp_path / "runs" / "tiny" / "report.json").read_text())
    assert set(report["teacher"]["metrics"]) == {"rmse", "mae", "r2", "pixels", "chips"}
    assert report["variants"][0]["metrics"]["rmse"] > 0

"""Past one process: prediction in blocks on a dask.distributed cluster, training in several
processes under `accelerate launch` (127.0.0.1 only)."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio

from instageo.cli import main
from tests.conftest import REPO

pytest.importorskip("dask.distributed")

# one training epoch each; int8, always chosen: dynamic quantisation's scale is the whole
# batch's, so only blocks that batch tiles as the single process does give its bytes
DEMO = ["--set", "student.depth=1", "--set", "teacher.train.epochs=1", "--set", "student.train.epochs=1",
        "--set", "export.onnx.quantize=true", "--set", "export.predict.int8_tolerance_pp=100", "--until", "predict"]
OUTPUTS = ("prediction.tif", "confidence.tif", "rgb.tif")


@pytest.fixture(scope="module")
def single_process(tmp_path_factory):
    """The demo run to its prediction, in one process: the runs folder and the stage folder."""
    runs = tmp_path_factory.mktemp("demo") / "runs"
    assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(runs), *DEMO]) == 0
    report = json.loads((runs / "demo" / "report.json").read_text())
    assert report["variants"][0]["prediction_area"]["model"] == "model.int8.onnx"
    return runs, (runs / "demo" / report["prediction"]).parent


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes (each restarted by its nanny when killed) on 127.0.0.1."""
    from dask.distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                      processes=True) as local, Client(local) as client:
        yield local.scheduler_address, client


def without_prediction(single_process, tmp_path) -> Path:
    """A copy of the single-process run's folder with its trained stages but no prediction."""
    runs = tmp_path / "runs"
    shutil.copytree(single_process[0], runs)
    for stage in (runs / "demo" / "stages").glob("predict-*"):
        shutil.rmtree(stage)
    return runs


def dask_args(address: str, block_tiles: int) -> list[str]:
    return ["--set", f"export.predict.executor={{kind: dask, address: '{address}'}}",
            "--set", f"export.predict.block_tiles={block_tiles}"]


def predict_stage(runs: Path) -> Path:
    return next((runs / "demo" / "stages").glob("predict-*"))


def test_two_workers_predict_the_single_process_bytes(single_process, cluster, tmp_path):
    from rio_cogeo.cogeo import cog_validate

    runs = without_prediction(single_process, tmp_path)
    assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(runs), *DEMO,
                 *dask_args(cluster[0], block_tiles=48)]) == 0
    stage = predict_stage(runs)
    assert stage.name == single_process[1].name  # where it ran is not part of the cache key
    records = [json.loads(p.read_text()) for p in sorted(stage.glob("blocks/rows*/record.json"))]
    assert len(records) >= 4
    assert sum(r["tiles"] for r in records) > json.loads((stage / "manifest.json").read_text())["summary"][
        "prediction_area"]["tiles"]  # the tiles along a block's edge were read by both blocks
    for name in OUTPUTS:
        assert (stage / name).read_bytes() == (single_process[1] / name).read_bytes(), name
        valid, errors, _ = cog_validate(str(stage / name))
        assert valid, errors
        with rasterio.open(stage / name.replace(".tif", ".vrt")) as mosaic, rasterio.open(stage / name) as cog:
            assert mosaic.transform == cog.transform and mosaic.crs == cog.crs
            assert np.array_equal([mosaic.nodata], [cog.nodata], equal_nan=True)
            assert np.array_equal(mosaic.read(), cog.read(), equal_nan=True), name
            if name == "prediction.tif":
                assert mosaic.colormap(1)[1] == cog.colormap(1)[1]


def test_two_workers_compute_the_single_process_embeddings(single_process, cluster, tmp_path):
    """The embeddings stage on dask: the encoder head and the feature sink in blocks, the
    same embeddings.tif as one process (the engine's executor serves every head and sink)."""
    runs = tmp_path / "runs"
    shutil.copytree(single_process[0], runs)
    until = [*DEMO[:-1], "embeddings"]
    assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(runs), *until]) == 0
    alone = next((runs / "demo" / "stages").glob("embeddings-*"))
    expected = (alone / "embeddings.tif").read_bytes()
    shutil.rmtree(alone)
    assert main([str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(runs), *until,
                 *dask_args(cluster[0], block_tiles=48)]) == 0
    stage = next((runs / "demo" / "stages").glob("embeddings-*"))
    assert len(list(stage.glob("blocks/rows*/record.json"))) >= 4
    assert (stage / "embeddings.tif").read_bytes() == expected


def test_a_run_killed_with_a_worker_resumes_from_its_finished_blocks(single_process, cluster, tmp_path):
    """SIGKILL to one worker and to instarun itself mid-prediction; the rerun (the nanny has
    restarted the worker) keeps the blocks finished before and ends with the same bytes. A
    block an older version wrote (its record without "counts") is predicted again."""
    address, client = cluster
    runs = without_prediction(single_process, tmp_path)
    command = [str(Path(sys.executable).parent / "instarun"), str(REPO / "recipes" / "demo.yaml"),
               "--runs-dir", str(runs), *DEMO, *dask_args(address, block_tiles=1)]
    log = open(tmp_path / "first.log", "w")
    first = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    blocks = runs / "demo" / "stages"
    deadline = time.monotonic() + 240
    while len(list(blocks.glob(".partial-predict-*/blocks/rows*/record.json"))) < 2:
        assert first.poll() is None, (tmp_path / "first.log").read_text()
        assert time.monotonic() < deadline, "no block finished"
        time.sleep(0.005)
    worker = next(iter(client.run(os.getpid).values()))
    os.kill(worker, signal.SIGKILL)
    first.send_signal(signal.SIGKILL)
    first.wait(30)
    log.close()
    time.sleep(1)  # tasks running when the client went finish or are dropped
    finished = {p: p.stat().st_mtime_ns for p in blocks.glob(".partial-predict-*/blocks/rows*/record.json")}
    older = sorted(finished)[0]
    record = json.loads(older.read_text())
    older.write_text(json.dumps({**record, "class_pixels": record.pop("counts")}))
    del finished[older]

    client.wait_for_workers(2, timeout=60)
    second = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    said = re.search(r"in (\d+) blocks on dask \((\d+) finished before\)", second.stdout + second.stderr)
    assert said and len(finished) <= int(said[2]) < int(said[1]), second.stdout + second.stderr
    stage = predict_stage(runs)
    for name in OUTPUTS:
        assert (stage / name).read_bytes() == (single_process[1] / name).read_bytes(), name
    for record, mtime in finished.items():
        moved = stage / "blocks" / record.parent.name / "record.json"
        assert moved.stat().st_mtime_ns == mtime, f"{record.parent.name} was predicted again"
    assert "counts" in json.loads((stage / "blocks" / older.parent.name / "record.json").read_text())


def test_two_processes_under_accelerate_launch_train_what_one_process_trains(tmp_path):
    """The tiny teacher and two students, data-parallel in 2 CPU processes (gloo) through
    `accelerate launch`, against one process. Tolerance: each epoch's loss within 1e-4
    (relative) and the metrics within 0.005 (measured: equal to 6 decimals over 15 epochs; only
    the order of float sums differs), the same best epochs; and it did run in 2 processes."""
    from tests.servers import free_port

    shutil.copy(REPO / "recipes" / "tiny.yaml", tmp_path / "tiny.yaml")
    common = [str(tmp_path / "tiny.yaml"), "--until", "student", "--set", "teacher.train.epochs=4",
              "--set", "student.train.epochs=3", "--set", "student.depth=[1,2]"]
    assert main([*common, "--runs-dir", str(tmp_path / "one")]) == 0
    launch = [str(Path(sys.executable).parent / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
              "--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port()), "-m", "instageo"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # CPU processes with gloo, GPU or not
    two = subprocess.run([*launch, *common, "--runs-dir", str(tmp_path / "two")], capture_output=True, text=True,
                         timeout=600, env=env)
    assert two.returncode == 0, two.stdout + two.stderr
    assert two.stdout.count("5 stage(s) run") == 1  # the other process says nothing
    one, two = (json.loads((tmp_path / name / "tiny" / "report.json").read_text()) for name in ("one", "two"))
    pairs = [(one["teacher"], two["teacher"])] + list(zip(one["variants"], two["variants"]))
    for single, parallel in pairs:
        assert (single["processes"], parallel["processes"]) == (1, 2)
        assert parallel["best_epoch"] == single["best_epoch"]
        for metrics in ("metrics", "val_metrics"):
            assert parallel[metrics]["miou"] == pytest.approx(single[metrics]["miou"], abs=0.005)
    losses = [[h["loss"] for h in run["teacher"]["history"]] for run in (one, two)]
    assert losses[1] == pytest.approx(losses[0], rel=1e-4)
    assert not list((tmp_path / "two" / "tiny" / "stages").glob(".partial-*"))

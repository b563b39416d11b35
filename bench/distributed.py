"""Past one process, on this machine: prediction on a 2-worker dask LocalCluster against the
single process (same area, same model, same bytes), and the demo teacher trained in 2
processes under `accelerate launch` against 1. On one machine this measures the overheads
(tiles read twice along block edges, the mosaic copy, process start-up, gradient
all-reduce); the gain needs more machines than this one's cores.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402
from bench.predict import BACKBONE, CHIP, CLASSES, DEPTH, SCENE, demo_area, make_bundle  # noqa: E402

ROUNDS = 3
BLOCKS = 4  # about this many blocks over the scene


def main() -> None:
    from dask.distributed import Client, LocalCluster

    from instageo.deploy import predict
    from instageo.progress import Progress
    from instageo.recipe.loader import load_recipe
    from instageo.runner.stage import StageContext, StageResult

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe, search, _ = demo_area(folder, "dist", "")
        make_bundle(folder / "export" / "bundle", recipe)
        export = StageResult("export", "bench", folder / "export", {"onnx": "bundle/model.onnx",
                                                                     "bundle": "bundle/bundle.json"}, {})
        log = logging.getLogger("bench.distributed")
        tiles = len(predict.plan_tiles(recipe, search, len(CLASSES), StageContext(
            folder, folder, log, Progress(enabled=False), (), "bench")).jobs)
        with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None,
                          processes=True) as cluster, Client(cluster):
            on_dask = load_recipe(folder / "dist.yaml", [
                f"export.predict.executor={{kind: dask, address: '{cluster.scheduler_address}'}}",
                f"export.predict.block_tiles={max(tiles // BLOCKS, 1)}"])
            ways = {"one process": recipe, "dask, 2 workers": on_dask}
            seconds: dict[str, list[float]] = {name: [] for name in ways}
            outputs: dict[str, Path] = {}
            for round_ in range(ROUNDS + 1):  # the first: a warm-up
                for name, way in ways.items():
                    workdir = folder / f"{name.replace(' ', '_').replace(',', '')}-{round_}"
                    workdir.mkdir()
                    started = time.perf_counter()
                    predict.run(way, {"search": search, "export": export},
                                StageContext(workdir, folder, log, Progress(enabled=False), (), "bench"))
                    if round_:
                        seconds[name].append(time.perf_counter() - started)
                    outputs[name] = workdir
            read = sum(json.loads(p.read_text())["tiles"] for p in outputs["dask, 2 workers"].glob("blocks/*/record.json"))
            blocks = len(list(outputs["dask, 2 workers"].glob("blocks/*/record.json")))
            same = all((outputs["one process"] / f).read_bytes() == (outputs["dask, 2 workers"] / f).read_bytes()
                       for f in ("prediction.tif", "confidence.tif", "rgb.tif"))
        training = train_one_and_two(folder)
    single, dask = median(seconds["one process"]), median(seconds["dask, 2 workers"])
    lines = [
        f"Machine: {machine()}. Prediction: {tiles} tiles of {CHIP} px over a {SCENE} px demo scene, {BACKBONE}"
        f" student depth {DEPTH} (random weights), int8; median of {ROUNDS} after a warm-up, in alternation;"
        " the LocalCluster started once, outside the timing.",
        "",
        "| prediction | seconds | vs one process |",
        "|---|---|---|",
        f"| one process | {single:.2f} | 1 |",
        f"| dask LocalCluster, 2 workers x 1 thread, {blocks} blocks | {dask:.2f} | **{single / dask:.2f}x** |",
        "",
        f"Same bytes: **{same}**. Tiles read by the blocks: {read} for {tiles} ({read / tiles - 1:+.0%}: a block"
        " reads every tile reaching into its rows, and starts on a batch boundary).",
        "",
        "| demo teacher (8 epochs), wall time of the command | seconds | vs 1 process |",
        "|---|---|---|",
        f"| `instarun demo.yaml --until teacher` | {training['one']:.1f} | 1 |",
        f"| `accelerate launch --multi_gpu --num_processes 2 ... -m instageo demo.yaml --until teacher` (gloo) |"
        f" {training['two']:.1f} | **{training['one'] / training['two']:.2f}x** |",
        "",
        f"Test mIoU of the teacher: {training['miou_one']:.4f} in 1 process, {training['miou_two']:.4f} in 2.",
    ]
    print("\n".join(lines))
    write_section("Past one process: dask prediction, 2-process training (bench/distributed.py)", "\n".join(lines))


def train_one_and_two(folder: Path) -> dict:
    """The demo up to its teacher, cold, in 1 and in 2 processes (each in a fresh runs folder)."""
    shutil.copy(REPO / "recipes" / "demo.yaml", folder / "demo.yaml")
    bin_dir = Path(sys.executable).parent
    commands = {"one": [str(bin_dir / "instarun")],
                "two": [str(bin_dir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2",
                        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
                        "--main_process_ip", "127.0.0.1", "-m", "instageo"]}
    result = {}
    for name, command in commands.items():
        runs = folder / f"train-{name}"
        # the data stages first, so only training (and start-up) is timed
        subprocess.run([str(bin_dir / "instarun"), "demo.yaml", "--runs-dir", str(runs), "--until", "chips"],
                       cwd=folder, check=True, capture_output=True)
        started = time.perf_counter()
        subprocess.run([*command, "demo.yaml", "--runs-dir", str(runs), "--until", "teacher"], cwd=folder, check=True,
                       capture_output=True)
        result[name] = time.perf_counter() - started
        report = json.loads((runs / "demo" / "report.json").read_text())
        result[f"miou_{name}"] = report["teacher"]["metrics"]["miou"]
    return result


if __name__ == "__main__":
    main()

"""End-to-end prediction vs the model alone, on the same tiles.

End to end is the predict stage as `instarun` runs it: choosing and reading each tile's
acquisitions from COGs (masks first), normalising, ONNX in batches while the next tiles are
read, blending, writing three COGs with overviews. Model-only is ONNX Runtime on the same
tiles already normalised in memory, in the same batches. Both count the area's pixels, so
their ratio is the share of the model's speed the stage delivers (goal: >= 0.8).

The model is a student (first 2 blocks) of a Prithvi-EO-1.0-100M-shaped teacher with random
weights: a realistic cost per tile, no download, and speed does not depend on the weights.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402
from bench.chips import serve_scene_over_http  # noqa: E402
from tests.servers import RangeFileServer  # noqa: E402

LATENCIES = tuple(float(v) for v in os.environ.get("BENCH_LATENCIES", "0,0.02,0.05").split(","))
HTTP_ROUNDS = 2


def clear_gdal_http_cache() -> None:
    """Empty GDAL's process-wide cache of downloaded ranges (VSICurlClearCache), so every timed
    run over HTTP downloads what it reads, as a fresh process would."""
    import ctypes

    import rasterio

    libs = Path(rasterio.__file__).parent.parent / "rasterio.libs"
    ctypes.CDLL(str(next(libs.glob("libgdal*")))).VSICurlClearCache()

SCENE = int(os.environ.get("BENCH_SCENE", "1024"))
BACKBONE = os.environ.get("BENCH_BACKBONE", "prithvi_eo_v1_100")
DEPTH, CHIP, STEPS, BATCH, ROUNDS = 2, int(os.environ.get("BENCH_CHIP", "224")), 3, 8, 5
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
CLASSES = ["other", "water", "vegetation"]


def make_bundle(folder: Path) -> Path:
    """model.onnx and bundle.json of a randomly initialised student, as the export stage lays them out."""
    import torch

    from instageo.deploy import onnx
    from instageo.model.network import PixelModel, cut_student
    from instageo.model.specs import V1, backbone_spec

    torch.manual_seed(0)
    spec = backbone_spec(BACKBONE)
    student = cut_student(PixelModel(spec, len(BANDS), STEPS, len(CLASSES)), DEPTH).eval()
    folder.mkdir(parents=True)
    onnx.export(student, (torch.randn(1, len(BANDS), STEPS, CHIP, CHIP),), folder / "model.onnx", opset=17)
    stats = V1  # any plausible reflectance statistics: this measures speed
    bundle = {"format": "instageo-bundle/2", "model": "model.onnx",
              "normalization": {"mean": list(stats["mean"]), "std": list(stats["std"])}, "classes": CLASSES,
              "colours": ["#bdbdbd", "#2166ac", "#1b7837"], "backbone": BACKBONE, "depth": DEPTH}
    (folder / "bundle.json").write_text(json.dumps(bundle))
    return folder


def main() -> None:
    import numpy as np

    from instageo.cli import main as instarun
    from instageo.data.chip_build import read_stack, reader_for
    from instageo.data import demo
    from instageo.deploy import onnx, predict
    from instageo.progress import Progress
    from instageo.recipe.loader import load_recipe
    from instageo.runner.stage import StageContext, StageResult

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = demo.generate(folder / "scene", seed=5, size=SCENE, acquisitions=6, points=60)
        item = next(scene.catalog.parent.glob("hls-demo/*/*.json"))
        bbox = [round(v, 6) for v in json.loads(item.read_text())["bbox"]]  # the whole scene
        (folder / "bench.yaml").write_text(
            "name: bench\ndata:\n  source: {kind: catalog, path: scene/catalog.json}\n"
            "  observations: {kind: points, path: scene/observations.csv}\n"
            f"  chips: {{size: {CHIP}, bands: {BANDS}, time: {{steps: {STEPS}, step_days: 30,"
            " tolerance_days: 16}, mask: {max_fraction: 0.5}}\n"
            f"task: {{classes: {CLASSES}}}\nexport: {{predict: {{batch_size: {BATCH}, bbox: {bbox}}}}}\n")
        runs = ["--runs-dir", str(folder / "runs")]
        assert instarun([str(folder / "bench.yaml"), *runs, "--until", "search"]) == 0
        recipe = load_recipe(folder / "bench.yaml")
        search_dir = next((folder / "runs" / "bench" / "stages").glob("search-*"))
        manifest = json.loads((search_dir / "manifest.json").read_text())
        search = StageResult("search", manifest["key"], search_dir, manifest["files"], manifest.get("summary", {}))
        bundle_dir = make_bundle(folder / "export" / "bundle")
        export = StageResult("export", "bench", folder / "export", {"onnx": "bundle/model.onnx",
                                                                     "bundle": "bundle/bundle.json"}, {})
        log = logging.getLogger("bench.predict")

        def context(name: str) -> StageContext:
            workdir = folder / name
            workdir.mkdir(exist_ok=True)
            return StageContext(workdir, folder, log, Progress(enabled=False), (), "bench")

        # the same tiles, read once and normalised in memory, for the model-only timing
        tiling = predict.plan_tiles(recipe, search, len(CLASSES), context("plan"))
        bundle = json.loads((bundle_dir / "bundle.json").read_text())
        mean = np.array(bundle["normalization"]["mean"], np.float32)[None, :, None, None]
        std = np.array(bundle["normalization"]["std"], np.float32)[None, :, None, None]
        started = time.perf_counter()
        stacks = [read_stack(job, reader_for(job)) for job in tiling.jobs]
        reading = time.perf_counter() - started
        arrays = np.stack([np.nan_to_num((s.image - mean) / std).transpose(1, 0, 2, 3)
                           for s in stacks if not isinstance(s, str)]).astype(np.float32)
        session = onnx.session(bundle_dir / "model.onnx")
        pixels = tiling.layout.width * tiling.layout.height

        def end_to_end() -> None:
            predict.run(recipe, {"search": search, "export": export}, context(f"e2e-{time.monotonic_ns()}"))

        def model_only() -> None:
            onnx.run(session, (arrays,), BATCH)

        seconds = {"end to end": [], "model only": []}
        for runner in (end_to_end, model_only):  # warm-up
            runner()
        for _ in range(ROUNDS):
            for name, runner in (("end to end", end_to_end), ("model only", model_only)):
                started = time.perf_counter()
                runner()
                seconds[name].append(time.perf_counter() - started)
        # over HTTP: the same scene from a Range-honouring loopback server with added latency;
        # reads in runs of neighbours against tiles handed out one by one (the default)
        with RangeFileServer(folder / "scene") as server:
            serve_scene_over_http(folder / "scene", server.url)
            assert instarun([str(folder / "bench.yaml"), *runs, "--until", "search", "--force", "search"]) == 0
            http_dir = max((folder / "runs" / "bench" / "stages").glob("search-*"), key=lambda p: p.stat().st_mtime)
            manifest = json.loads((http_dir / "manifest.json").read_text())
            search = StageResult("search", manifest["key"], http_dir, manifest["files"], manifest.get("summary", {}))
            assert "http" in (http_dir / "items.json").read_text()
            http_rows = []
            for latency in LATENCIES:
                timings: dict[str, list] = {"runs": [], "one by one": []}
                for _ in range(HTTP_ROUNDS):
                    for order, run in (("runs", 0), ("one by one", 1)):
                        server.reset(latency)
                        clear_gdal_http_cache()
                        predict.READ_RUN = run
                        started = time.perf_counter()
                        end_to_end()
                        timings[order].append((time.perf_counter() - started, server.stats()["requests"]))
                predict.READ_RUN = 1
                http_rows.append((latency, {k: (median(t for t, _ in v), median(r for _, r in v))
                                            for k, v in timings.items()}))
    e2e, model = (pixels / median(seconds[k]) for k in ("end to end", "model only"))
    lines = [
        f"Machine: {machine()}. Area {tiling.layout.width}x{tiling.layout.height} px at 30 m (demo scene,"
        f" local COGs), {len(tiling.jobs)} tiles of {CHIP} px x {STEPS} steps x {len(BANDS)} bands,"
        f" overlap {tiling.overlap} px, batches of {BATCH}; model: {BACKBONE} student depth {DEPTH}"
        f" (random weights), ONNX Runtime CPU. Median of {ROUNDS} rounds, timed in alternation.",
        "",
        "| path | pixels/s | ratio |",
        "|---|---|---|",
        f"| end to end (predict stage: read, model, blend, 3 COGs) | {e2e:,.0f} | **{e2e / model:.2f}** |",
        f"| model only (same tiles pre-loaded) | {model:,.0f} | 1.00 |",
        f"| reading the tiles alone (one thread, once) | {pixels / reading:,.0f} | {pixels / reading / model:.2f} |",
        "",
        "Reading runs on threads beside the model; on a machine this small they share its cores, and"
        " what the stage adds (starting the ONNX session, reading and normalising tiles, blending,"
        " three COGs with overviews) cannot hide behind the model.",
        "",
        f"Over HTTP (the same COGs from a Range-honouring loopback server, latency added per answer; GDAL's"
        f" range cache emptied before each run; median of {HTTP_ROUNDS}, alternating). Ours: each read"
        " thread takes a run of neighbouring tiles (tried, not the default); one by one: tiles handed to the"
        " threads in turn (the default).",
        "",
        "| latency | reads | pixels/s | end to end / model only | requests |",
        "|---|---|---|---|---|",
        *(f"| {1000 * latency:.0f} ms | {order} | {pixels / t:,.0f} | **{pixels / t / model:.2f}** | {requests} |"
          for latency, timings in http_rows for order, (t, requests) in timings.items()),
    ]
    print("\n".join(lines))
    write_section("Prediction end to end vs model only (bench/predict.py)", "\n".join(lines))


if __name__ == "__main__":
    main()

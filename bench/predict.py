"""End-to-end prediction vs the model alone, on the same tiles.

End to end is the predict stage as `instarun` runs it: choosing and reading each tile's
acquisitions from COGs (masks first), normalising, ONNX in batches while the next tiles are
read, blending, writing three COGs with overviews. Model-only is ONNX Runtime on the same
tiles already normalised in memory, in the same batches. Both count the area's pixels, so
their ratio is the share of the model's speed the stage delivers.

Measured: the defaults before and now (float32 at overlap 0.5 against int8 at 0.25, and each
change alone), the reads over HTTP at 0/20/50 ms with and without reading ahead, and the
peak memory of `instarun predict` for an area and one 4x larger. The map quality of each
overlap and model is bench/stitching.py's (trained models; these weights are random).

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

from bench.common import machine, search_result, tile_inputs, write_section  # noqa: E402
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

# BENCH_SHAPES: the model and tiles measured, (backbone, tile px, scene px): a student of
# EO-1.0-100M on 224 px tiles, or the demo's (recipes/demo.yaml: instageo_ci on 32 px tiles)
SHAPES = {"eo": ("prithvi_eo_v1_100", 224, 1024), "demo": ("instageo_ci", 32, 512)}
SHAPE = os.environ.get("BENCH_SHAPES", "eo")
SCENE = int(os.environ.get("BENCH_SCENE", SHAPES[SHAPE][2]))
BACKBONE = os.environ.get("BENCH_BACKBONE", SHAPES[SHAPE][0])
DEPTH, CHIP, STEPS, ROUNDS = 2, int(os.environ.get("BENCH_CHIP", SHAPES[SHAPE][1])), 3, 3
TITLE = "Prediction end to end vs model only (bench/predict.py)" + (
    "" if SHAPE == "eo" else ", the demo's shapes (BENCH_SHAPES=demo)")
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
CLASSES = ["other", "water", "vegetation"]


# name -> (overlap, int8_tolerance_pp, batch): null tolerance means always float32
CONFIGS = {"before: float32, overlap 0.5, batch 8": (0.5, None, 8), "int8, overlap 0.5, batch 8": (0.5, 0.5, 8),
           "float32, overlap 0.25, batch 8": (0.25, None, 8),
           "now: int8, overlap 0.25, batch 2 (the defaults)": (0.25, 0.5, 2)}
BEFORE, NOW = "before: float32, overlap 0.5, batch 8", "now: int8, overlap 0.25, batch 2 (the defaults)"
BATCHES = (2, 4, 8)
BATCH = 2  # for `instarun predict` (the memory rows): the default
PEAK_RSS = """
import sys
from instageo.cli import main
code = main(sys.argv[1:])
print(next(line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')))
sys.exit(code)
"""


def make_bundle(folder: Path, recipe) -> Path:
    """model.onnx, model.int8.onnx and bundle.json of a randomly initialised student, as the
    export stage writes them (the int8 check says it lost nothing: speed is what is measured)."""
    import torch

    from instageo.deploy import onnx
    from instageo.deploy.export import _bundle
    from instageo.model.network import PixelModel, cut_student
    from instageo.recipe.backbones import V1, backbone_spec

    torch.manual_seed(0)
    spec = backbone_spec(BACKBONE)
    student = cut_student(PixelModel(spec, len(BANDS), STEPS, len(CLASSES)), DEPTH).eval()
    folder.mkdir(parents=True)
    onnx.export(student, (torch.randn(1, len(BANDS), STEPS, CHIP, CHIP),), folder / "model.onnx", opset=17)
    onnx.quantize(folder / "model.onnx", folder / "model.int8.onnx")
    same = {"float32": 0.5, "int8": 0.5, "delta": 0.0}
    meta = {"normalization": {"mean": list(V1["mean"]), "std": list(V1["std"]), "source": {b: "pretrained" for b in BANDS}},
            "backbone": BACKBONE, "depth": DEPTH}
    bundle = _bundle(recipe, meta, {}, {"metric": "miou", "val": same, "test": same})
    (folder / "bundle.json").write_text(json.dumps(bundle))
    return folder


def demo_area(folder: Path, name: str, predict: str):
    """A demo scene of SCENE px in ``folder``, a recipe ``name`` over all of it (``predict``: more of
    export.predict, YAML flow entries) and its search stage, run: (recipe, search result, scene)."""
    from instageo.cli import main as instarun
    from instageo.data import demo
    from instageo.recipe.loader import load_recipe

    scene = demo.generate(folder / "scene", seed=5, size=SCENE, acquisitions=6, points=60)
    item = next(scene.catalog.parent.glob("hls-demo/*/*.json"))
    bbox = [round(v, 6) for v in json.loads(item.read_text())["bbox"]]  # the whole scene
    (folder / f"{name}.yaml").write_text(
        f"name: {name}\ndata:\n  source: {{kind: catalog, path: scene/catalog.json}}\n"
        "  observations: {kind: points, path: scene/observations.csv}\n"
        f"  chips: {{size: {CHIP}, bands: {BANDS}, time: {{steps: {STEPS}, step_days: 30, tolerance_days: 16}},"
        " mask: {max_fraction: 0.5}}\n"
        f"task: {{classes: {CLASSES}}}\nexport: {{predict: {{bbox: {bbox}{', ' + predict if predict else ''}}}}}\n")
    assert instarun([str(folder / f"{name}.yaml"), "--runs-dir", str(folder / "runs"), "--until", "search"]) == 0
    stage = next((folder / "runs" / name / "stages").glob("search-*"))
    return load_recipe(folder / f"{name}.yaml"), search_result(stage), scene


def instarun_predict(bundle: Path, bbox: list[float], date: str, catalog: Path, out: Path,
                     batch: int = BATCH) -> tuple[float, float]:
    """(peak RSS in MiB (VmHWM), seconds) of `instarun predict` over ``bbox``, in its own process."""
    import subprocess

    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", PEAK_RSS, "predict", str(bundle), "--bbox", ",".join(map(str, bbox)),
                             "--date", date, "--out", str(out), "--catalog", str(catalog), "--batch-size", str(batch)],
                            capture_output=True, text=True, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    return int(result.stdout.split()[-1]) / 1024, time.perf_counter() - started


def main() -> None:

    from instageo.cli import main as instarun
    from instageo.data import chip_build, demo, reader
    from instageo.deploy import onnx, predict
    from instageo.engine import runtime
    from instageo.progress import Progress
    from instageo.recipe.loader import load_recipe
    from instageo.runner.stage import StageContext, StageResult

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        scene = demo.generate(folder / "scene", seed=5, size=SCENE, acquisitions=6, points=60)
        item = next(scene.catalog.parent.glob("hls-demo/*/*.json"))
        bbox = [round(v, 6) for v in json.loads(item.read_text())["bbox"]]  # the whole scene
        recipes = {}
        for index, (name, (overlap, tolerance, batch)) in enumerate(CONFIGS.items()):
            (folder / f"bench{index}.yaml").write_text(
                f"name: bench{index}\ndata:\n  source: {{kind: catalog, path: scene/catalog.json}}\n"
                "  observations: {kind: points, path: scene/observations.csv}\n"
                f"  chips: {{size: {CHIP}, bands: {BANDS}, time: {{steps: {STEPS}, step_days: 30,"
                " tolerance_days: 16}, mask: {max_fraction: 0.5}}\n"
                f"task: {{classes: {CLASSES}}}\nexport: {{predict: {{batch_size: {batch}, bbox: {bbox},"
                f" overlap: {overlap}, int8_tolerance_pp: {'null' if tolerance is None else tolerance}}}}}\n")
            recipes[name] = load_recipe(folder / f"bench{index}.yaml")
        runs = ["--runs-dir", str(folder / "runs")]
        assert instarun([str(folder / "bench0.yaml"), *runs, "--until", "search"]) == 0
        search_dir = next((folder / "runs" / "bench0" / "stages").glob("search-*"))

        search = search_result(search_dir)
        bundle_dir = make_bundle(folder / "export" / "bundle", recipes[NOW])
        export = StageResult("export", "bench", folder / "export", {"onnx": "bundle/model.onnx",
                                                                     "bundle": "bundle/bundle.json"}, {})
        bundle = json.loads((bundle_dir / "bundle.json").read_text())
        log = logging.getLogger("bench.predict")

        def context(name: str) -> StageContext:
            workdir = folder / name
            workdir.mkdir(exist_ok=True)
            return StageContext(workdir, folder, log, Progress(enabled=False), (), "bench")

        def end_to_end(name: str, search: StageResult) -> None:
            predict.run(recipes[name], {"search": search, "export": export}, context(f"e2e-{time.monotonic_ns()}"))

        # model only: the same tiles, read once and prepared in memory as the engine prepares
        # them (normalised, with their coordinates), through the same model
        tilings, arrays, sessions = {}, {}, {}
        for name in (BEFORE, NOW):
            tilings[name] = predict.plan_tiles(recipes[name], search, len(CLASSES), context("plan"))
            model_path = bundle_dir / runtime.choose_model(bundle, CONFIGS[name][1])[0]
            arrays[name] = tile_inputs(tilings[name].jobs, model_path, bundle, CHIP, tilings[name].overlap)
            sessions[name] = onnx.session(model_path)
        pixels = tilings[BEFORE].layout.width * tilings[BEFORE].layout.height
        assert pixels == tilings[NOW].layout.width * tilings[NOW].layout.height

        def model_only(name: str) -> None:
            onnx.run(sessions[name], arrays[name], CONFIGS[name][2])

        runners = [(name, lambda name=name: end_to_end(name, search)) for name in CONFIGS]
        runners += [(f"model only: {name}", lambda name=name: model_only(name)) for name in (BEFORE, NOW)]
        seconds: dict[str, list[float]] = {name: [] for name, _ in runners}
        for _, runner in runners:  # warm-up
            runner()
        for _ in range(ROUNDS):
            for name, runner in runners:
                started = time.perf_counter()
                runner()
                seconds[name].append(time.perf_counter() - started)
        speed = {name: pixels / median(times) for name, times in seconds.items()}
        spread = {name: (pixels / max(times), pixels / min(times)) for name, times in seconds.items()}

        # memory: the whole scene against a quarter of it (half the width and height), twice each
        west, south, east, north = bbox
        quarter = [west, south + (north - south) / 2, west + (east - west) / 2, north]  # north-west: imagery there
        date = tilings[NOW].date.isoformat()
        peaks = {label: min(instarun_predict(bundle_dir, box, date, scene.catalog, folder / f"rss-{label}-{i}")[0]
                            for i in range(2)) for label, box in (("1x", quarter), ("4x", bbox))}
        batches: dict[int, list] = {}
        for i in range(2):  # the tiles per ONNX call: speed and memory, in alternation
            for batch in BATCHES:
                batches.setdefault(batch, []).append(
                    instarun_predict(bundle_dir, bbox, date, scene.catalog, folder / f"batch-{batch}-{i}", batch))

        # over HTTP: the same scene from a Range-honouring loopback server with added latency,
        # the defaults' configuration with a tile's reads sent ahead together, and without
        with RangeFileServer(folder / "scene") as server:
            serve_scene_over_http(folder / "scene", server.url)
            assert instarun([str(folder / "bench0.yaml"), *runs, "--until", "search", "--force", "search"]) == 0
            http_search = search_result(max((folder / "runs" / "bench0" / "stages").glob("search-*"),
                                            key=lambda p: p.stat().st_mtime))
            assert "http" in (http_search.dir / "items.json").read_text()
            http_rows = []
            threads = reader.REMOTE_READ_THREADS
            for latency in LATENCIES:
                timings: dict[str, list] = {"ahead": [], "one at a time": []}
                for _ in range(HTTP_ROUNDS):
                    for way, pool in (("ahead", threads), ("one at a time", 0)):
                        server.reset(latency)
                        clear_gdal_http_cache()
                        reader.REMOTE_READ_THREADS = pool
                        reader._opened.clear()  # as a fresh process: the store's speed unknown
                        reader._fastest_first_open = None
                        chip_build._READERS.clear()  # ...and no file open (its header read) from the last run
                        started = time.perf_counter()
                        end_to_end(NOW, http_search)
                        stats = server.stats()
                        timings[way].append((time.perf_counter() - started, stats["requests"], stats["most_in_flight"]))
                reader.REMOTE_READ_THREADS = threads
                http_rows.append((latency, {k: tuple(median(t[i] for t in v) for i in range(3))
                                            for k, v in timings.items()}))
    before, now = speed[BEFORE], speed[NOW]
    layout = tilings[NOW].layout
    lines = [
        f"Machine: {machine()}. Area {layout.width}x{layout.height} px at 30 m (demo scene, local COGs), tiles of"
        f" {CHIP} px x {STEPS} steps x {len(BANDS)} bands; model: {BACKBONE} student depth"
        f" {DEPTH} (random weights), ONNX Runtime CPU. Median of {ROUNDS} rounds [slowest-fastest], every"
        " configuration timed in alternation.",
        "",
        "| configuration | tiles | end to end, pixels/s | vs before | end to end / model only |",
        "|---|---|---|---|---|",
        *(f"| {name} | {len(tilings[BEFORE if overlap == 0.5 else NOW].jobs)} | {speed[name]:,.0f}"
          f" [{spread[name][0]:,.0f}-{spread[name][1]:,.0f}] | **{speed[name] / before:.2f}x** | "
          + (f"{speed[name] / speed['model only: ' + name]:.2f}" if name in (BEFORE, NOW) else "") + " |"
          for name, (overlap, _, _) in CONFIGS.items()),
        f"| model only, {BEFORE.split(': ')[1]} | | {speed['model only: ' + BEFORE]:,.0f} | | 1.00 |",
        f"| model only, {NOW.split(': ')[1]} | | {speed['model only: ' + NOW]:,.0f} | | 1.00 |",
        "",
        f"End to end with the defaults: **{now / before:.2f}x** the old defaults' pixels/s. Map quality of the same"
        " overlaps and models (trained students, against truth): bench/stitching.py's section.",
        "",
        f"Over HTTP, the defaults (the same COGs from a Range-honouring loopback server, latency added per answer;"
        f" GDAL's range cache emptied before each run; median of {HTTP_ROUNDS}, alternating). Ahead: each tile's"
        " masks, then the bands of every step the masks keep, in flight together (the default); one at a time:"
        " one read after another, as before.",
        "",
        "| latency | reads | pixels/s | end to end / model only | / end to end on local files | requests | most in flight |",
        "|---|---|---|---|---|---|---|",
        *(f"| {1000 * latency:.0f} ms | {way} | {pixels / t:,.0f} | **{pixels / t / speed['model only: ' + NOW]:.2f}** |"
          f" {pixels / t / now:.2f} | {requests:.0f} | {most:.0f} |"
          for latency, timings in http_rows for way, (t, requests, most) in timings.items()),
        "",
        f"Peak RSS of `instarun predict` (the defaults, lower of 2 runs): {peaks['1x']:,.0f} MiB for a quarter of the"
        f" scene, {peaks['4x']:,.0f} MiB for the whole scene (4x the area): **{peaks['4x'] / peaks['1x'] - 1:+.1%}**.",
        "",
        "Tiles per ONNX call (`instarun predict --batch-size`, whole scene, each a new process, lower of 2):",
        "",
        "| batch | seconds (process) | peak RSS MiB |",
        "|---|---|---|",
        *(f"| {batch} | {min(t for _, t in runs):.1f} | {min(r for r, _ in runs):,.0f} |" for batch, runs in batches.items()),
    ]
    print("\n".join(lines))
    write_section(TITLE, "\n".join(lines))


if __name__ == "__main__":
    main()

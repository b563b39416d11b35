"""The predict stage of this checkout beside an older commit's, on the same machine in one
run: each checkout in its own processes, alternating, over the same scene, bundle and search
stage (local COGs, then the same COGs over HTTP at 50 ms), and the model alone beside them
(ONNX Runtime on the same tiles in memory, as bench/predict.py times it).

BENCH_AB_COMMIT: the older commit (default: the head before the runs of small tiles);
BENCH_SHAPES: demo or eo, as bench/predict.py. The older commit is checked out with
`git worktree` into a temporary folder and removed afterwards.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

REPO = Path(__file__).resolve().parent.parent
COMMIT = os.environ.get("BENCH_AB_COMMIT", "c55eaa1")
PAIRS, LATENCY = 3, 0.05


def child(checkout: str, scene: str, search_dir: str, rounds: int, url: str | None, latency: float | None) -> None:
    """Time the predict stage of ``checkout`` (imported from there), ``rounds`` times, and print them."""
    sys.path.insert(0, checkout)
    os.chdir(checkout)
    from bench.common import search_result
    from instageo.deploy import predict
    from instageo.progress import Progress
    from instageo.recipe.loader import load_recipe
    from instageo.runner.stage import StageContext, StageResult

    assert Path(predict.__file__).is_relative_to(checkout), predict.__file__  # not the installed one
    folder, search = Path(scene), search_result(Path(search_dir))
    export = StageResult("export", "bench", folder / "export", {"onnx": "bundle/model.onnx",
                                                                 "bundle": "bundle/bundle.json"}, {})
    recipe, work = load_recipe(folder / "p.yaml"), Path(tempfile.mkdtemp())

    def run() -> float:
        out = Path(tempfile.mkdtemp(dir=work))
        started = time.perf_counter()
        predict.run(recipe, {"search": search, "export": export},
                    StageContext(out, folder, logging.getLogger("bench"), Progress(enabled=False), (), "bench"))
        return time.perf_counter() - started

    if url is None:
        run()  # warm-up: the OS's file cache
    times = []
    for _ in range(rounds):
        if url is not None:  # as a fresh process would meet the store: nothing cached
            import urllib.request

            from bench.predict import clear_gdal_http_cache
            from instageo.data import chip_build, reader

            urllib.request.urlopen(f"{url}/__reset__?latency={latency}", timeout=5).read()
            clear_gdal_http_cache()
            reader._opened.clear()
            reader._fastest_first_open = None
            chip_build._READERS.clear()
        times.append(run())
    print("SECONDS", json.dumps(times))


def main() -> None:
    sys.path.insert(0, str(REPO))
    from bench.chips import serve_scene_over_http
    from bench.common import machine, tile_inputs, write_section
    from bench.predict import CHIP, SHAPE, demo_area, make_bundle
    from instageo.cli import main as instarun
    from instageo.deploy import onnx, predict
    from instageo.engine import runtime
    from instageo.progress import Progress
    from instageo.runner.stage import StageContext
    from tests.servers import RangeFileServer

    with tempfile.TemporaryDirectory() as tmp:
        folder, old = Path(tmp), Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), COMMIT], cwd=REPO, check=True, capture_output=True)
        try:
            recipe, search, _ = demo_area(folder, "p", "")
            bundle_dir = make_bundle(folder / "export" / "bundle", recipe)
            bundle = json.loads((bundle_dir / "bundle.json").read_text())
            (folder / "plan").mkdir()
            tiling = predict.plan_tiles(recipe, search, 3, StageContext(folder / "plan", folder, logging.getLogger("bench"),
                                                                        Progress(enabled=False), (), "bench"))
            model_path = bundle_dir / runtime.choose_model(bundle, 0.5)[0]
            arrays = tile_inputs(tiling.jobs, model_path, bundle, CHIP, tiling.overlap)
            session = onnx.session(model_path)
            onnx.run(session, arrays, 2)
            seconds: dict[str, list[float]] = {}

            def timed_child(label: str, checkout: Path, search_dir: Path, *http: str) -> None:
                result = subprocess.run([sys.executable, __file__, "--child", str(checkout), str(folder), str(search_dir),
                                         "2", *http], capture_output=True, text=True, cwd=checkout, timeout=900)
                line = next((l for l in result.stdout.splitlines() if l.startswith("SECONDS")), None)
                assert line, result.stderr[-3000:]
                seconds.setdefault(label, []).extend(json.loads(line.split(" ", 1)[1]))

            def model_only() -> None:
                for _ in range(2):
                    started = time.perf_counter()
                    onnx.run(session, arrays, 2)
                    seconds.setdefault("model only", []).append(time.perf_counter() - started)

            for _ in range(PAIRS):
                timed_child(f"{COMMIT}, local COGs", old, search.dir)
                timed_child("this checkout, local COGs", REPO, search.dir)
                model_only()
            with RangeFileServer(folder / "scene") as server:
                serve_scene_over_http(folder / "scene", server.url)
                assert instarun([str(folder / "p.yaml"), "--runs-dir", str(folder / "runs"), "--until", "search",
                                 "--force", "search"]) == 0
                http_search = max((folder / "runs" / "p" / "stages").glob("search-*"), key=lambda p: p.stat().st_mtime)
                for _ in range(PAIRS):
                    for label, checkout in ((f"{COMMIT}, HTTP 50 ms", old), ("this checkout, HTTP 50 ms", REPO)):
                        timed_child(label, checkout, http_search, server.url, str(LATENCY))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=REPO, capture_output=True)
    pixels = tiling.layout.width * tiling.layout.height
    model = median(seconds["model only"])
    lines = [f"Machine: {machine()}. The predict stage with the defaults (int8, overlap 0.25, batch 2) over"
             f" {tiling.layout.width}x{tiling.layout.height} px ({len(tiling.jobs)} tiles of {CHIP} px), bench/predict.py's"
             f" {SHAPE} shapes; each checkout in its own processes, alternating ({PAIRS} pairs x 2 runs); the model alone"
             " in this process between them. Median [fastest-slowest].", "",
             "| what | seconds | pixels/s | end to end / model only | this checkout vs the older |",
             "|---|---|---|---|---|"]
    for label, times in seconds.items():
        older = next((median(v) for k, v in seconds.items() if k.startswith(COMMIT) and k.split(", ")[1] in label), None)
        speedup = f"**{older / median(times):.2f}x**" if label.startswith("this") and older else ""
        lines.append(f"| {label} | {median(times):.3f} [{min(times):.3f}-{max(times):.3f}] | {pixels / median(times):,.0f}"
                     f" | {model / median(times):.2f} | {speedup} |")
    print("\n".join(lines))
    write_section(f"This checkout against {COMMIT}: the predict stage (bench/predict_ab.py, {SHAPE} shapes)",
                  "\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        checkout, scene, search_dir, rounds, *http = sys.argv[2:]
        child(checkout, scene, search_dir, int(rounds), http[0] if http else None, float(http[1]) if http else None)
    else:
        main()

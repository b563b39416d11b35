"""Where a prediction's time goes: py-spy samples the predict stage as it runs, in its own
process, on local COGs and over HTTP at 50 ms, and the samples are sorted into phases.

The model and scene are bench/predict.py's (a Prithvi-EO-1.0-100M-shaped student of depth
2, random weights, int8, the defaults: overlap 0.25, batch 2, over the whole demo scene).
The phases are those of the thread that drives the prediction (its wall time: waiting on
reads counts), and beside them what the reading threads were busy with (CPU they take from
the model on these cores). Sampling is py-spy's (an external sampler, not our own timers):
``py-spy record --threads --idle --format raw``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, search_result, write_section  # noqa: E402

RATE = 50  # samples per second (py-spy samples every thread: at 200 it slowed the HTTP runs, 70 threads, 2x)
# (phase, a frame that marks it), first match wins; frames are "function (file:line)"
MAIN_PHASES = [
    ("plan: search the catalogue, tile the area", "plan_tiles"),
    ("ONNX session start", "session (instageo/engine/runtime.py"),
    ("model (ONNX Runtime)", "run (instageo/engine/runtime.py"),
    ("softmax, blend weights, input colour", "predict (instageo/engine/heads.py"),
    # small tiles from local files are read in the model's thread (engine/loop.py, read_threads)
    ("read and decode, in this thread", "read_row_stacks (instageo/data/chip_build.py"),
    ("normalise, coordinates, in this thread", "prepare (instageo/engine/heads.py"),
    ("wait for reads", "read_ahead (instageo/engine/loop.py"),
    ("blend into the strip", "add (instageo/engine/loop.py"),
    ("classes, confidence, write rows", "write_blend (instageo/engine/sinks.py"),
    ("blend into the strip", "take (instageo/engine/loop.py"),
    ("overviews and COG copies", "finish (instageo/engine/sinks.py"),
]
READER_PHASES = [
    ("normalise, coordinates", "prepare (instageo/engine/heads.py"),
    ("read and decode (GDAL)", "read_row_stacks (instageo/data/chip_build.py"),
]


def child(folder: Path) -> None:
    """One prediction, as the predict stage runs it (the profiled process)."""
    from instageo.progress import Progress
    from instageo.recipe.loader import load_recipe
    from instageo.runner.stage import StageContext, StageResult

    search = search_result(Path((folder / "search.txt").read_text()))
    export = StageResult("export", "bench", folder / "export", {"onnx": "bundle/model.onnx",
                                                                 "bundle": "bundle/bundle.json"}, {})
    workdir = folder / f"out-{os.getpid()}"
    workdir.mkdir()
    context = StageContext(workdir, folder, logging.getLogger("bench"), Progress(enabled=False), (), "bench")
    profiled_prediction(load_recipe(folder / "profile.yaml"), search, export, context)


def profiled_prediction(recipe, search, export, context) -> None:
    from instageo.deploy import predict

    predict.run(recipe, {"search": search, "export": export}, context)


def sample(folder: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw samples of one prediction: (frames root first, thread, count)."""
    raw = folder / "py-spy.txt"
    subprocess.run([str(Path(sys.executable).parent / "py-spy"), "record", "--threads", "--idle", "--format", "raw",
                    "--rate", str(RATE), "-o", str(raw), "--", sys.executable, __file__, "--child", str(folder)],
                   check=True, capture_output=True, cwd=REPO)
    samples = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples.append((stack.split(";"), int(count)))
    return samples


def breakdown(samples) -> tuple[Counter, Counter, float]:
    """Seconds per phase of the driving thread, seconds the reading threads were busy per
    phase, and the prediction's wall seconds."""
    main, readers = Counter(), Counter()
    for frames, count in samples:
        if not any("profiled_prediction" in f for f in frames):
            if any("read_row_stacks" in f or "prepare (" in f for f in frames):
                phase = next((name for name, mark in READER_PHASES if any(mark in f for f in frames)), "other")
                if not _idle(frames):
                    readers[phase] += count / RATE
            continue
        main[next((name for name, mark in MAIN_PHASES if any(mark in f for f in frames)), "other")] += count / RATE
    return main, readers, sum(main.values())


def _idle(frames: list[str]) -> bool:
    """A reading thread blocked (py-spy marks no idle flag in raw output: the innermost frame
    tells): waiting on a lock, a queue or a socket."""
    return any(word in frames[-1] for word in ("wait (", "_wait_for_tstate_lock", "acquire", "recv", "select"))


def main() -> None:
    from bench.chips import serve_scene_over_http
    from bench.predict import demo_area, make_bundle
    from instageo.cli import main as instarun
    from tests.servers import RangeFileServer

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe, search, scene = demo_area(folder, "profile", "")
        make_bundle(folder / "export" / "bundle", recipe)

        def profile(label: str, search_stage: Path) -> None:  # the child reads the search stage there
            (folder / "search.txt").write_text(str(search_stage))
            rows[label] = breakdown(sample(folder))

        profile("local COGs", search.dir)
        with RangeFileServer(folder / "scene", latency=0.05) as server:
            serve_scene_over_http(folder / "scene", server.url)
            assert instarun([str(folder / "profile.yaml"), "--runs-dir", str(folder / "runs"), "--until", "search",
                             "--force", "search"]) == 0
            stages = (folder / "runs" / "profile" / "stages").glob("search-*")
            latest = max(stages, key=lambda p: p.stat().st_mtime)
            assert "http" in (latest / "items.json").read_text()
            profile("HTTP, 50 ms", latest)
    phases = list(dict.fromkeys([name for name, _ in MAIN_PHASES] + ["other"]))
    lines = [f"Machine: {machine()}. py-spy {RATE} samples/s of `predict.run` in its own process (one cold run each: "
             "session start and search included), the defaults (int8, overlap 0.25, batch 2), bench/predict.py's "
             "scene and student. Seconds of the driving thread's wall time per phase (share):", "",
             "| phase | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for phase in phases:
        lines.append(f"| {phase} | " + " | ".join(
            f"{main.get(phase, 0):.2f} ({main.get(phase, 0) / total:.0%})" for main, _, total in rows.values()) + " |")
    lines.append("| **total** | " + " | ".join(f"**{total:.2f}**" for _, _, total in rows.values()) + " |")
    lines += ["", "Reading threads, CPU-busy seconds (not waiting on a socket or lock), summed over threads:", "",
              "| work | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
    for phase in [name for name, _ in READER_PHASES]:
        lines.append(f"| {phase} | " + " | ".join(f"{readers.get(phase, 0):.2f}" for _, readers, _ in rows.values()) + " |")
    print("\n".join(lines))
    from bench.predict import SHAPE

    write_section("Where a prediction's time goes (bench/profile_predict.py)" + (
        "" if SHAPE == "eo" else ", the demo's shapes (BENCH_SHAPES=demo)"), "\n".join(lines))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        child(Path(sys.argv[2]))
    else:
        main()

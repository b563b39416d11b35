"""On a CUDA GPU: chips per second through the model alone and end to end, and their ratio.

The model is bench/predict.py's (a Prithvi-EO-1.0-100M-shaped student, random weights), as
float32 and as the float16 twin the export writes for GPUs (`export.onnx.float16`), each at
the batch `onnx.fastest_batch` picks (doubling while tiles/s rise 10% and memory holds).
Model only: ONNX Runtime's CUDA provider (I/O binding) on tiles already in memory; end to
end: the predict stage over the whole demo scene as `instarun` runs it (reads, blending,
COGs), with the model and batch it chooses on a GPU. Without CUDA it says "no GPU" and
leaves bench/RESULTS.md as it is.
"""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, tile_inputs, write_section  # noqa: E402
from bench.predict import BACKBONE, BANDS, CHIP, CLASSES, DEPTH, SCENE, STEPS, demo_area, make_bundle  # noqa: E402

ROUNDS = 3


def main() -> None:
    from instageo.deploy import onnx

    if not onnx.gpu_present():
        print("no GPU: CUDA is not usable on this machine (libcuda finds no device); nothing measured")
        return
    lines = measure()
    print("\n".join(lines))
    write_section("GPU: model only and end to end (bench/gpu.py)", "\n".join(lines))


def measure() -> list[str]:

    from instageo.deploy import onnx, predict
    from instageo.progress import Progress
    from instageo.runner.stage import StageContext, StageResult

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recipe, search, _ = demo_area(folder, "gpu", "")  # batch unset: chosen on the GPU
        bundle_dir = make_bundle(folder / "export" / "bundle", recipe)
        onnx.to_float16(bundle_dir / "model.onnx", bundle_dir / "model.fp16.onnx")
        bundle = json.loads((bundle_dir / "bundle.json").read_text())
        context = StageContext(folder, folder, logging.getLogger("bench.gpu"), Progress(enabled=False), (), "gpu")
        tiling = predict.plan_tiles(recipe, search, len(CLASSES), context)
        tiles = tile_inputs(tiling.jobs, bundle_dir / "model.onnx", bundle, CHIP, tiling.overlap)
        sessions = {name: onnx.session(bundle_dir / f"model{suffix}.onnx") for name, suffix in (("float32", ""),
                                                                                                ("float16", ".fp16"))}
        agreement = float((onnx.run(sessions["float32"], tiles).argmax(1)
                           == onnx.run(sessions["float16"], tiles).argmax(1)).mean())
        bundle.update(model_fp16="model.fp16.onnx", float16={"argmax_agreement": agreement, "max_abs_diff": None})
        (bundle_dir / "bundle.json").write_text(json.dumps(bundle))
        batches = {name: onnx.fastest_batch(session, tuple(t[:1] for t in tiles), 2)
                   for name, session in sessions.items()}
        model_only = {}
        for name, session in sessions.items():
            onnx.run(session, tiles, batches[name])
            times = []
            for _ in range(ROUNDS):
                started = time.perf_counter()
                onnx.run(session, tiles, batches[name])
                times.append(time.perf_counter() - started)
            model_only[name] = len(tiles[0]) / min(times)
        export = StageResult("export", "gpu", folder / "export", {"onnx": "bundle/model.onnx",
                                                                   "bundle": "bundle/bundle.json"}, {})
        end_to_end, chosen = [], None
        for round_ in range(ROUNDS + 1):  # the first is a warm-up
            workdir = folder / f"e2e{round_}"
            workdir.mkdir()
            started = time.perf_counter()
            output = predict.run(recipe, {"search": search, "export": export},
                                 StageContext(workdir, folder, context.log, Progress(enabled=False), (), "gpu"))
            end_to_end.append(time.perf_counter() - started)
            chosen = output.summary["prediction_area"]
    e2e = len(tiling.jobs) / min(end_to_end[1:])
    used = "float16" if chosen["model"] == "model.fp16.onnx" else "float32"
    return [
        f"Machine: {machine()}, GPU via ONNX Runtime's CUDA provider. {len(tiling.jobs)} tiles of {CHIP} px x {STEPS}"
        f" steps x {len(BANDS)} bands over a {SCENE} px demo scene; {BACKBONE} student depth {DEPTH} (random"
        f" weights). Best of {ROUNDS}.",
        "",
        "| path | model | batch | chips/s |",
        "|---|---|---|---|",
        f"| model only | float32 | {batches['float32']} | {model_only['float32']:,.0f} |",
        f"| model only | float16 (agrees with float32 on {100 * agreement:.2f}% of pixels) | {batches['float16']} |"
        f" {model_only['float16']:,.0f} |",
        f"| end to end (predict stage) | {chosen['model']} ({chosen['model_why']}) | {chosen['batch_size']} | {e2e:,.0f} |",
        "",
        f"End to end / model only ({used}): **{e2e / model_only[used]:.2f}**; float16 / float32, model only:"
        f" **{model_only['float16'] / model_only['float32']:.2f}x**.",
    ]


if __name__ == "__main__":
    main()

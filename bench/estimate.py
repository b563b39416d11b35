"""`instarun plan --estimate` against the run it estimates: recipes/demo.yaml (3 students) in a
fresh runs folder, estimated (the search stage runs, as the command does), then run as a
user would; per stage the estimated and measured seconds and their ratio, and the counts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

INSTARUN = str(Path(sys.executable).parent / "instarun")


def main() -> None:
    from instageo.pipeline import default_pipeline
    from instageo.progress import Progress
    from instageo.recipe import load_recipe
    from instageo.runner import plan_recipe
    from instageo.deploy.estimate import estimate_plan

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        shutil.copy(REPO / "recipes" / "demo.yaml", folder / "demo.yaml")
        recipe = load_recipe(folder / "demo.yaml", None)
        _, decisions = plan_recipe(recipe, default_pipeline(), folder / "runs")
        rows, _ = estimate_plan(decisions, (folder / "runs" / "demo").resolve(), Progress(enabled=False))
        subprocess.run([INSTARUN, "demo.yaml", "--runs-dir", "runs"], cwd=folder, check=True, capture_output=True)
        report = json.loads((folder / "runs" / "demo" / "report.json").read_text())
    measured = {(s["name"], ", ".join(s["variants"])): s["seconds"] for s in report["stages"]}
    lines = [f"Machine: {machine()}. Estimated by `instarun plan recipes/demo.yaml --estimate` (times measured "
             "at plan time: one training step per model, one forward pass per tile, in PyTorch), then run "
             "cold in the same folder.", "",
             "| stage | variant | estimated s | measured s | measured / estimated |", "|---|---|---|---|---|"]
    for row in rows:
        if row.seconds is None:
            continue
        seconds = measured[(row.stage, row.variants)]
        lines.append(f"| {row.stage} | {row.variants if ',' not in row.variants else 'all'} | {row.seconds:.1f} | "
                     f"{seconds:.1f} | {seconds / max(row.seconds, 1e-9):.2f} |")
    chips = report["dataset"]["chips"]
    estimated_chips = next(r.work for r in rows if r.stage == "chips").split(" chips")[0].split()[-1]
    tiles = [v["prediction_area"]["tiles"] for v in report["variants"]]
    estimated_tiles = [r.work.split(" tiles")[0].replace(",", "") for r in rows if r.stage == "predict"]
    lines += ["", f"Chips: estimated at most {estimated_chips} (one per observation), made {chips} (the rest "
              "skipped: cloudy or no data). Tiles: estimated " + ", ".join(estimated_tiles) + ", predicted "
              + ", ".join(map(str, tiles)) + ".",
              "Training is where the estimate is a measurement (a real step of the real model); predict's is the "
              "model alone in PyTorch, so its ratio is what reading, blending and writing COGs add (and what ONNX "
              "int8 saves)."]
    print("\n".join(lines))
    write_section("Estimate vs measured run (bench/estimate.py)", "\n".join(lines))


if __name__ == "__main__":
    main()

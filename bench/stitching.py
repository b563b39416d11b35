"""How tiles are stitched into a map, judged by the map: mIoU against ground truth and seams.

Two trained students predict over an area with each overlap between neighbouring tiles
(blended over the whole overlap), in float32 and int8:
- the demo scene (recipes/demo.yaml, student depth 2): trained on point labels at chip
  centres, so a chip's edges are what the model knows least; truth: the scene generator's
  class raster on the prediction date;
- a real scene: Sen1Floods11 Spain_7370579 (held out from training), Sentinel-1 VV/VH, scored
  against its hand labels (../shared/data/sen1floods11).

Seams: how often the class changes across a pixel boundary on the tiling's lines (tile
edges and the middles of overlaps) over how often it changes across every other boundary;
1.0 is a map with no trace of its tiles. The same for the jump in confidence.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

OVERLAPS = [0.5, 0.25, 0.125, 0.0]  # the first: the default before this benchmark
ROUNDS = 2  # predict timings: median of this many, overlaps in alternation


def seam_ratios(classes: np.ndarray, confidence: np.ndarray, size: int, overlap: int,
                patch: int) -> tuple[float, float]:
    """(class changes, confidence jumps) across the tiling's lines over those across the other
    boundaries at the same offset within the model's patches (a ViT's map has its own
    pattern at patch edges, which is not a seam)."""
    from instageo.data.grid import _starts

    valid = classes != 255
    ratios = []
    for values, jump in ((classes, lambda a, b: (a != b).astype(np.float64)),
                         (np.nan_to_num(confidence), lambda a, b: np.abs(a - b).astype(np.float64))):
        per_axis = []
        for axis in (0, 1):  # boundaries between rows, then between columns
            v, ok = (values, valid) if axis == 1 else (values.T, valid.T)
            both = ok[:, 1:] & ok[:, :-1]
            rate = np.where(both, jump(v[:, 1:], v[:, :-1]), 0).sum(0) / np.maximum(both.sum(0), 1)
            starts = _starts(v.shape[1], size, size - overlap)
            lines = {s for s in starts} | {s + size for s in starts} | {s + size - overlap // 2 for s in starts[:-1]}
            boundary = np.arange(1, v.shape[1])  # rate[i]: between pixels i and i + 1
            on = np.isin(boundary, sorted(lines))
            alike = np.isin(boundary % patch, sorted({b % patch for b in lines})) & ~on
            per_axis.append(rate[on].mean() / max(rate[alike].mean(), 1e-12))
        ratios.append(float(np.mean(per_axis)))
    return ratios[0], ratios[1]


def truth_on(prediction: Path, truth: np.ndarray, transform, crs: str, nodata: int) -> np.ndarray:
    """The truth raster resampled (nearest) onto the prediction's grid."""
    import rasterio
    from rasterio.warp import Resampling, reproject

    with rasterio.open(prediction) as dataset:
        out = np.full((dataset.height, dataset.width), nodata, np.int16)
        reproject(truth.astype(np.int16), out, src_transform=transform, src_crs=crs, src_nodata=nodata,
                  dst_transform=dataset.transform, dst_crs=dataset.crs, dst_nodata=nodata,
                  resampling=Resampling.nearest)
    return out


def score(run: Path, truth, classes: int, size: int, overlap: float, patch: int) -> dict:
    """The map's mIoU against truth, its seam ratios and the predict stage's seconds."""
    import rasterio

    from instageo.model.metrics import segmentation_metrics

    report = json.loads((run / "report.json").read_text())
    variant = report["variants"][0]
    prediction = run / variant["prediction"]
    with rasterio.open(prediction) as dataset:
        predicted = dataset.read(1)
    with rasterio.open(run / variant["confidence"]) as dataset:
        confidence = dataset.read(1)
    expected = truth(prediction)
    keep = (expected >= 0) & (expected < classes) & (predicted != 255)
    seams = seam_ratios(predicted, confidence, size, int(round(size * overlap)), patch)
    seconds = [s["seconds"] for s in report["stages"] if s["name"] == "predict" and not s["cached"]]
    return {"miou": segmentation_metrics(predicted[keep].astype(np.int64), expected[keep].astype(np.int64),
                                         classes)["miou"],
            "seams": seams[0], "confidence_seams": seams[1], "seconds": seconds[0],
            "tiles": variant["prediction_area"]["tiles"], "model": variant["prediction_area"]["model"]}


def sweep(recipe: Path, runs: Path, truth, classes: int, size: int, sets: list[str]) -> dict:
    """Every overlap in float32 and int8, predict re-run ROUNDS times in alternation."""
    from instageo.cli import main as instarun
    from instageo.recipe.backbones import backbone_spec
    from instageo.recipe.loader import load_recipe

    patch = backbone_spec(load_recipe(recipe).teacher.backbone).patch_size
    base = ["--runs-dir", str(runs), "--until", "predict", *(a for s in sets for a in ("--set", s))]
    assert instarun([str(recipe), *base, "--set", "export.predict.int8_tolerance_pp=null"]) == 0  # train once
    results: dict = {}
    for _ in range(ROUNDS):
        for overlap in OVERLAPS:
            for model, tolerance in (("float32", "null"), ("int8", "100")):
                assert instarun([str(recipe), *base, "--force", "predict",
                                 "--set", f"export.predict.overlap={overlap}",
                                 "--set", f"export.predict.int8_tolerance_pp={tolerance}"]) == 0
                measured = score(runs / recipe.stem, truth, classes, size, overlap, patch)
                assert measured["model"].endswith("int8.onnx") == (model == "int8"), measured["model"]
                results.setdefault((overlap, model), []).append(measured)
    return {k: {**v[0], "seconds": float(np.median([m["seconds"] for m in v]))} for k, v in results.items()}


def demo_case(folder: Path) -> tuple[str, dict]:
    from instageo.data import demo
    from instageo.recipe.loader import load_recipe

    recipe_path = folder / "demo.yaml"
    recipe_path.write_text((REPO / "recipes" / "demo.yaml").read_text())
    recipe = load_recipe(recipe_path)
    source = recipe.data.source
    sets = ["student.depth=2", "export.onnx.quantize=true"]
    runs = folder / "runs"
    frames = {date: truth for date, _, _, truth in demo.render(source.seed, source.size, source.acquisitions)}
    from affine import Affine

    transform = Affine(demo.RESOLUTION, 0, demo.ORIGIN[0], 0, -demo.RESOLUTION, demo.ORIGIN[1])

    def truth(prediction: Path) -> np.ndarray:
        report = json.loads((runs / "demo" / "report.json").read_text())
        date = __import__("datetime").date.fromisoformat(report["variants"][0]["prediction_area"]["date"])
        return truth_on(prediction, frames[date], transform, demo.CRS, 255)

    return "demo scene (generator's truth)", sweep(recipe_path, runs, truth, 3, recipe.data.chips.size, sets)


def sen1floods11_case(folder: Path) -> tuple[str, dict]:
    import rasterio

    from tests.sen1floods11 import CHIPS, HELD_OUT_SPLIT, SHARED_DATA, TRAINING, write_recipe

    label = SHARED_DATA / "sen1floods11" / "Spain_7370579_LabelHand.tif"
    with rasterio.open(label) as dataset:
        hand, transform, crs = dataset.read(1), dataset.transform, dataset.crs
        west, south, east, north = rasterio.warp.transform_bounds(crs, "EPSG:4326", *dataset.bounds)
    write_recipe(folder, CHIPS, HELD_OUT_SPLIT, extra=TRAINING)
    date = next(line.split(",")[1] for line in (folder / "label_dates.csv").read_text().splitlines()
                if line.startswith(label.name))
    sets = ["export.onnx.quantize=true", f"export.predict.bbox=[{west},{south},{east},{north}]",
            f"export.predict.date={date}"]

    def truth(prediction: Path) -> np.ndarray:
        return truth_on(prediction, np.where(hand < 0, 255, hand), transform, crs, 255)

    return "Sen1Floods11 Spain_7370579 (hand labels, held out)", sweep(folder / "floods.yaml", folder / "runs", truth, 2,
                                                                     64, sets)


def main() -> None:
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, case in (("demo", demo_case), ("floods", sen1floods11_case)):
            (Path(tmp) / name).mkdir()
            cases.append(case(Path(tmp) / name))
    lines = [f"Machine: {machine()}. The predict stage re-run for each overlap and model (median seconds of "
             f"{ROUNDS}, in alternation); mIoU of the whole map against the truth; seams: rate of class changes "
             "(and of confidence jumps) across the tiling's lines over the rate elsewhere (1.00: no trace of "
             "the tiles).", ""]
    for name, results in cases:
        before = results[(0.5, "float32")]
        lines += [f"**{name}**", "",
                  "| overlap | model | tiles | mIoU | seams (classes) | seams (confidence) | predict s | speed-up |",
                  "|---|---|---|---|---|---|---|---|"]
        for (overlap, model), r in results.items():
            lines.append(f"| {overlap:g} | {model} | {r['tiles']} | {r['miou']:.3f} | {r['seams']:.2f} | "
                         f"{r['confidence_seams']:.2f} | {r['seconds']:.2f} | {before['seconds'] / r['seconds']:.2f}x |")
        lines.append("")
    print("\n".join(lines))
    write_section("Stitching: map quality and speed (bench/stitching.py)", "\n".join(lines))


if __name__ == "__main__":
    main()

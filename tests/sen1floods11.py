"""The real Sen1Floods11 samples in ../shared/data as an experiment: a local catalogue over
their S1 chips, a recipe with their hand labels as label rasters, and a held-out evaluation
against a global Otsu threshold on VV. Used by the test suite and by bench/heldout.py."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from instageo.cli import main

SHARED_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
HELD_OUT = ("Spain_7370579", "Nigeria_812045")  # test scenes: countries training never sees
CHIPS = ("{size: 64, resolution: 10, bands: [vv, vh], time: {steps: 1, tolerance_days: 1}, "
         "mask: {max_fraction: 0.5}}")


def held_out_split(scenes: tuple[str, ...] = HELD_OUT) -> str:
    """A spatial split whose test is every chip of the named scenes."""
    return ("{method: spatial, block_km: 1, val: 0.2, "
            f"test: {{files: [{', '.join(s + '_*' for s in scenes)}]}}}}")


HELD_OUT_SPLIT = held_out_split()
TRAINING = """teacher:
  backbone: instageo_ci
  train: {epochs: 8, batch_size: 16, lr: 1.0e-3, patience: 4}
student:
  depth: 2
  train: {epochs: 8, batch_size: 16, lr: 1.0e-3, patience: 4}
"""


def write_recipe(folder: Path, chips: str, split: str, extra: str = "") -> None:
    """A local catalogue over the real Sen1Floods11 chips (dated from their metadata) and a
    recipe reading their S1 bands with the hand labels as label rasters."""
    data = SHARED_DATA / "sen1floods11"
    metadata = json.loads((data / "Sen1Floods11_Metadata.geojson").read_text())
    dates = {f["properties"]["location"]: f["properties"]["s1_date"].replace("/", "-") for f in metadata["features"]}
    dates["Mekong"] = dates["Cambodia"]
    labels = sorted(data.glob("*_LabelHand.tif"))
    with open(folder / "dates.csv", "w") as handle:
        handle.write("scene,date\n" + "".join(f"{p.name.rsplit('_', 1)[0]},{dates[p.name.rsplit('_', 2)[0]]}\n" for p in labels))
    with open(folder / "label_dates.csv", "w") as handle:
        handle.write("file,date\n" + "".join(f"{p.name},{dates[p.name.rsplit('_', 2)[0]]}\n" for p in labels))
    assert main(["catalog", "build", str(data), "--out", str(folder / "cat"), "--dates", str(folder / "dates.csv")]) == 0
    paths = ", ".join(str(p) for p in labels)
    (folder / "floods.yaml").write_text(f"""
name: floods
data:
  source: {{kind: catalog, path: cat/catalog.json, bands: {{vv: "S1Hand#VV", vh: "S1Hand#VH"}}}}
  observations: {{kind: raster, paths: [{paths}], dates: label_dates.csv}}
  chips: {chips}
  split: {split}
task: {{classes: [land, water]}}
""" + extra)


def vv_and_labels(stage: Path, rows: list[dict], split: str) -> tuple[np.ndarray, np.ndarray]:
    """VV values and labels of every labelled pixel of a split's chips."""
    import rasterio

    vv, labels = [], []
    for row in rows:
        if row["split"] == split:
            with rasterio.open(stage / row["image"]) as dataset:
                image = dataset.read(1)
            with rasterio.open(stage / row["label"]) as dataset:
                label = dataset.read(1)
            keep = (label != -1) & ~np.isnan(image)
            vv.append(image[keep])
            labels.append(label[keep].astype(np.int64))
    return np.concatenate(vv), np.concatenate(labels)


def held_out_run(folder: Path, seeds: list[int], *sets: str) -> dict:
    """Train on the scenes not held out, for each seed; test on the held-out ones. Returns the
    Otsu baseline's and each seed's teacher and student test mIoU, with the run's files."""
    from instageo.model.metrics import segmentation_metrics

    write_recipe(folder, CHIPS, HELD_OUT_SPLIT, extra=TRAINING)
    assert main([str(folder / "floods.yaml"), "--runs-dir", str(folder / "runs"), "--until", "student",
                 "--set", f"seed={','.join(map(str, seeds))}", *(a for s in sets for a in ("--set", s))]) == 0
    report = json.loads((folder / "runs" / "floods" / "report.json").read_text())
    stage = next((folder / "runs" / "floods" / "stages").glob("chips-*"))
    rows = list(csv.DictReader(open(stage / "index.csv")))
    from skimage.filters import threshold_otsu

    threshold = threshold_otsu(vv_and_labels(stage, rows, "train")[0], nbins=256)  # water: low VV backscatter
    vv, truth = vv_and_labels(stage, rows, "test")
    teachers = report["teacher"]["seeds"] if len(seeds) > 1 else [report["teacher"]]
    return {"report": report, "stage": stage, "rows": rows, "test_pixels": len(truth),
            "otsu": segmentation_metrics((vv < threshold).astype(np.int64), truth, 2)["miou"],
            "seeds": [t["seed"] for t in teachers],
            "teacher": [t["metrics"]["miou"] for t in teachers],
            "student": [v["metrics"]["miou"] for v in report["variants"]]}


def summary_line(result: dict) -> str:
    def spread(values):
        return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    return (f"Sen1Floods11 held-out test mIoU ({', '.join(HELD_OUT)}), seeds {result['seeds']}: Otsu "
            f"{result['otsu']:.3f}; teacher {spread(result['teacher'])} {[round(t, 3) for t in result['teacher']]}; "
            f"student {spread(result['student'])} {[round(s, 3) for s in result['student']]}")

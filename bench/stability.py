"""Stability on real data: Sen1Floods11 held-out scenes over 3 split seeds x 3 training seeds.

Test is every chip of two named scenes (`split.test.files`); val and train are dealt from the
other scenes by `split.seed`. For each of the 9 runs: the teacher's and the student's test
mIoU, the student's ONNX chips/s over the teacher's (the `speed` stage, as report.md has it),
the report's own baselines on the same pixels (Otsu on VV, minimum distance), and a
peer model a practitioner would pick instead, trained on the same chips with the same
normalisation, split and seed: a segmentation-models-pytorch U-Net (resnet18 encoder, random
init, flips + 90-degree rotations, AdamW, 30 epochs, best epoch on val mIoU). The peer is a
bench-only extra (`pip install '.[bench]'`), never a product dependency.

`BENCH_SPLIT_SEEDS`, `BENCH_SEEDS` choose the grid; `BENCH_SETS` (`;`-separated `--set`s)
tries a training change without editing the recipe.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


from bench.common import machine, write_section
from instageo.recipe.training import TrainSpec
from instageo.runner.sweep import WITHIN_PP

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
SPLIT_SEEDS = [int(s) for s in os.environ.get("BENCH_SPLIT_SEEDS", "0,1,2").split(",")]
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0,1,2").split(",")]
SETS = [s for s in os.environ.get("BENCH_SETS", "").split(";") if s]
PEER_EPOCHS = int(os.environ.get("BENCH_PEER_EPOCHS", "30"))
PEER = os.environ.get("BENCH_PEER", "1") != "0"  # 0: the teacher's grid alone, to try settings fast
PEER_MOSAIC = os.environ.get("BENCH_PEER_MOSAIC", "1") != "0"  # the peer again with the teacher's mosaic
MOSAIC = TrainSpec().mosaic  # the peer's second run: the teacher's default mosaic
HELD_OUT_SCENES = os.environ.get("BENCH_HELD_OUT", "")  # test scenes, ","-separated; default tests/sen1floods11.py's


def peer_unet(chips_dir: Path, norm: dict, seed: int, mosaic: int = 1, epochs: int = PEER_EPOCHS) -> float:
    """Test mIoU of the U-Net a practitioner would train on these chips (best epoch on val);
    ``mosaic`` > 1: with the teacher's mosaic augmentation too."""
    import segmentation_models_pytorch as smp
    import torch
    from torch.nn import functional as F

    from instageo.model.data import augment, load_splits
    from instageo.model.metrics import segmentation_metrics

    torch.manual_seed(seed)
    data = load_splits(chips_dir, 1, ["vv", "vh"], False, norm["mean"], norm["std"])
    train, val, test = (data[n] for n in ("train", "val", "test"))
    model = smp.Unet("resnet18", encoder_weights=None, in_channels=2, classes=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)

    def miou(split) -> float:
        model.eval()
        with torch.no_grad():
            pred = torch.cat([model(split.x[i:i + 32, :, 0]).argmax(1) for i in range(0, len(split), 32)])
        labelled = split.y != -1
        return segmentation_metrics(pred[labelled].numpy(), split.y[labelled].numpy(), 2)["miou"]

    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=generator)
        for first in range(0, len(train), 16):
            index = order[first:first + 16]
            x, y, _ = augment(train.x[index], train.y[index], train.valid[index], generator, mosaic)
            loss = F.cross_entropy(model(x[:, :, 0]), y, ignore_index=-1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        score = miou(val)
        if score > best:
            best, best_state = score, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return miou(test)


def split_runs(folder: Path, split_seed: int, seeds: list[int], sets: list[str], peer: bool) -> list[dict]:
    """One split: the teacher and student of every seed, the baselines, the peer."""
    from instageo.cli import main
    from tests.sen1floods11 import CHIPS, TRAINING, held_out_split, write_recipe

    folder.mkdir(parents=True)
    write_recipe(folder, CHIPS, held_out_split(held_out_scenes()), extra=TRAINING)
    args = [str(folder / "floods.yaml"), "--runs-dir", str(folder / "runs"), "--until", "speed",
            "--set", f"seed={','.join(map(str, seeds))}", "--set", f"data.split.seed={split_seed}"]
    assert main(args + [a for s in sets for a in ("--set", s)]) == 0
    report = json.loads((folder / "runs" / "floods" / "report.json").read_text())
    chips_dir = next((folder / "runs" / "floods" / "stages").glob("chips-*"))
    teachers = report["teacher"]["seeds"] if len(seeds) > 1 else [report["teacher"]]
    baselines = report["teacher"]["baselines"]
    students = {v["seed"]: v for v in report["variants"]}
    speeds = report["speed"]["variants"]  # the speed stage's side-by-side timing, as in report.md
    rows = []
    for teacher in teachers:
        seed = teacher["seed"]
        rows.append({
            "split_seed": split_seed, "seed": seed, "chips": report["dataset"].get("splits"),
            "otsu": baselines["otsu_vv"]["metrics"]["miou"],
            "minimum_distance": baselines["minimum_distance"]["metrics"]["miou"],
            "teacher": teacher["metrics"]["miou"], "teacher_val": teacher["val_metrics"]["miou"],
            "best_epoch": teacher.get("best_epoch"),
            "student": students[seed]["metrics"]["miou"], "student_val": students[seed]["val_metrics"]["miou"],
            "student_onnx_speedup": speeds[students[seed]["name"]]["speedup_onnx"],
            "peer": peer_unet(chips_dir, report["teacher"]["normalization"], seed) if peer else None,
            "peer_mosaic": peer_unet(chips_dir, report["teacher"]["normalization"], seed, MOSAIC)
            if peer and PEER_MOSAIC else None,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


def grid(folder: Path, split_seeds=SPLIT_SEEDS, seeds=SEEDS, sets=SETS, peer: bool = PEER) -> list[dict]:
    return [row for s in split_seeds for row in split_runs(folder / f"split{s}", s, seeds, sets, peer)]


def summary(rows: list[dict]) -> dict:
    def stats(key):
        values = [r[key] for r in rows if r[key] is not None]
        return {"mean": statistics.mean(values), "min": min(values), "max": max(values),
                "spread": max(values) - min(values)} if values else None

    keys = ("otsu", "minimum_distance", "teacher", "student", "student_onnx_speedup", "peer", "peer_mosaic")
    return {key: stats(key) for key in keys} | {
        "student_within": sum(r["student"] >= r["teacher"] - WITHIN_PP / 100 for r in rows),  # as report.md
        "teacher_beats_both": sum(r["teacher"] > max(r["otsu"], r["minimum_distance"]) for r in rows),
        "runs": len(rows)}


def held_out_scenes() -> tuple[str, ...]:
    """The test scenes: BENCH_HELD_OUT's, else tests/sen1floods11.py's."""
    from tests.sen1floods11 import HELD_OUT

    return tuple(s for s in HELD_OUT_SCENES.split(",") if s) or HELD_OUT


def main() -> None:
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        rows = grid(Path(tmp))
    found = summary(rows)
    line = (f"{found['runs']} runs: teacher test mIoU {found['teacher']['mean']:.3f} "
            f"[{found['teacher']['min']:.3f}-{found['teacher']['max']:.3f}], spread {found['teacher']['spread']:.3f}; "
            f"student {found['student']['mean']:.3f} (within {WITHIN_PP:g} pp of its teacher in {found['student_within']} of "
            f"{found['runs']}, ONNX chips/s {found['student_onnx_speedup']['mean']:.2f}x the teacher's); "
            f"peer U-Net {_number(found['peer'] and found['peer']['mean'])}, "
            f"with mosaic {_number(found['peer_mosaic'] and found['peer_mosaic']['mean'])}; "
            f"Otsu {found['otsu']['mean']:.3f}; minimum distance {found['minimum_distance']['mean']:.3f}; "
            f"the teacher beats both baselines in {found['teacher_beats_both']} of {found['runs']}")
    print(line)
    body = [
        f"Machine: {machine()}. tests/sen1floods11.py's recipe: test = every chip of "
        f"{' and '.join(held_out_scenes())} (`split.test.files`), val dealt from the other scenes by `split.seed`; instageo_ci teacher "
        f"from scratch with the recipe defaults, student depth 2. Extra settings: {SETS or 'none'}. "
        f"Peer: segmentation-models-pytorch U-Net (resnet18, random init, flips + rotations, AdamW 1e-3, "
        f"{PEER_EPOCHS} epochs, best epoch on val) on the same chips and normalisation; again with the teacher's "
        f"mosaic augmentation ({MOSAIC} x {MOSAIC} squares, `teacher.train.mosaic`). "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        "| split seed | seed | train / val / test / excluded chips | Otsu (VV) | minimum distance | peer U-Net "
        "| peer U-Net + mosaic | teacher (val) | teacher (test) | best epoch | student (test) | student ONNX speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['split_seed']} | {r['seed']} | {_chips(r['chips'])} | {r['otsu']:.3f} | {r['minimum_distance']:.3f} | "
          f"{_number(r['peer'])} | {_number(r['peer_mosaic'])} | {r['teacher_val']:.3f} | **{r['teacher']:.3f}** | {r['best_epoch']} | {r['student']:.3f} | "
          f"{r['student_onnx_speedup']:.2f}x |"
          for r in rows),
        "",
        line + ".",
    ]
    write_section("Stability on Sen1Floods11: 3 splits x 3 seeds, with a peer U-Net (bench/stability.py)",
                  "\n".join(body))


def _chips(splits: dict | None) -> str:
    if not splits:
        return "-"
    return " / ".join(str(splits.get(k, 0)) for k in ("train", "val", "test", "excluded"))


def _number(value) -> str:
    return "-" if value is None else f"{value:.3f}"

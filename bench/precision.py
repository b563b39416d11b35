"""bf16 mixed precision against fp32 for training, side by side in one run: the demo recipe
(teacher fine-tune seconds, teacher and student mIoU) and the Sen1Floods11 held-out scenes
(teacher and student test mIoU over seeds). fp32 and bf16 alternate, twice each on the demo,
so a drift of the machine hits both."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine, write_section

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
REPEATS = 2
SEEDS = [int(s) for s in os.environ.get("BENCH_SEEDS", "0,1,2").split(",")]
PRECISIONS = ("fp32", "bf16")


def _sets(precision: str) -> list[str]:
    return [f"teacher.train.precision={precision}", f"student.train.precision={precision}"]


def _demo(folder: Path, precision: str) -> dict:
    from instageo.cli import main

    args = [str(REPO / "recipes" / "demo.yaml"), "--runs-dir", str(folder), "--until", "student",
            "--set", "student.depth=2", *(a for s in _sets(precision) for a in ("--set", s))]
    assert main(args) == 0
    report = json.loads((folder / "demo" / "report.json").read_text())
    seconds = {s["name"]: s["seconds"] for s in report["stages"]}
    teacher, student = report["teacher"], report["variants"][0]
    assert teacher["precision"] == precision
    return {"teacher_s": seconds["teacher"], "student_s": seconds["student"],
            "teacher_val": teacher["val_metrics"]["miou"], "teacher_test": teacher["metrics"]["miou"],
            "student_test": student["metrics"]["miou"]}


STEPS = (("instageo_ci", 32, 3, 16), ("prithvi_eo_tiny", 224, 1, 4), ("prithvi_eo_v1_100", 64, 3, 2),
         ("prithvi_eo_v1_100", 224, 1, 2))  # backbone, chip px, frames, batch


def _training_steps() -> list[str]:
    """Milliseconds per training step (forward, backward, AdamW) in fp32 and bf16, alternating."""
    import torch

    from instageo.model.network import PixelModel
    from instageo.recipe.backbones import backbone_spec
    from instageo.model.train import autocast

    rows = []
    for name, chip, frames, batch in STEPS:
        torch.manual_seed(0)
        model = PixelModel(backbone_spec(name), 6, frames, 3)
        optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
        x, y = torch.randn(batch, 6, frames, chip, chip), torch.randint(0, 3, (batch, chip, chip))

        def step(precision):
            with autocast(torch.device("cpu"), precision):
                loss = torch.nn.functional.cross_entropy(model(x).float(), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

        seconds = {p: [] for p in PRECISIONS}
        for precision in PRECISIONS:
            step(precision)  # warm-up
        for _ in range(5):
            for precision in PRECISIONS:
                started = time.perf_counter()
                step(precision)
                seconds[precision].append(time.perf_counter() - started)
        fp32, bf16 = (statistics.median(seconds[p]) for p in PRECISIONS)
        width = backbone_spec(name).embed_dim
        rows.append(f"| {name} (width {width}) | {chip} px x {frames} | {batch} | {1000 * fp32:.0f} | "
                    f"{1000 * bf16:.0f} | **{fp32 / bf16:.2f}x** |")
    return rows


def main() -> None:
    from instageo.model.train import cpu_has_bf16
    from tests.sen1floods11 import held_out_run

    if not cpu_has_bf16():
        print("this CPU has no native bf16 (AVX512-BF16 or AMX): bf16 would be emulated; skipped")
        return
    started = time.perf_counter()
    steps = _training_steps()
    demo: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    floods = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(REPEATS):
            for precision in PRECISIONS:
                demo[precision].append(_demo(Path(tmp) / f"demo-{precision}-{repeat}", precision))
                print(precision, demo[precision][-1], flush=True)
        for precision in PRECISIONS:
            (Path(tmp) / f"floods-{precision}").mkdir()
            result = held_out_run(Path(tmp) / f"floods-{precision}", SEEDS, *_sets(precision))
            assert result["report"]["teacher"]["precision"] == precision
            floods[precision] = result
            print(precision, "floods", result["teacher"], result["student"], flush=True)

    def mean(values):
        return statistics.mean(values)

    def spread(values):
        return f"{mean(values):.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{values[0]:.3f}"

    fp32, bf16 = demo["fp32"], demo["bf16"]
    speed = mean(r["teacher_s"] for r in fp32) / mean(r["teacher_s"] for r in bf16)
    body = [
        f"Machine: {machine()}. Demo recipe (instageo_ci, 8 epochs, student depth 2), {REPEATS} runs per "
        f"precision, alternating; Sen1Floods11 held-out scenes (tests/sen1floods11.py), seeds {SEEDS}. "
        f"{time.perf_counter() - started:.0f} s.",
        "",
        "| precision | teacher stage (s) | student stage (s) | demo teacher val / test mIoU | demo student test mIoU "
        "| Sen1Floods11 teacher test mIoU | Sen1Floods11 student test mIoU |",
        "|---|---|---|---|---|---|---|",
    ]
    for precision in PRECISIONS:
        runs = demo[precision]
        teacher_s = " / ".join(format(r["teacher_s"], ".1f") for r in runs)
        student_s = " / ".join(format(r["student_s"], ".1f") for r in runs)
        body.append(
            f"| {precision} | {teacher_s} | {student_s} | "
            f"{mean(r['teacher_val'] for r in runs):.3f} / {mean(r['teacher_test'] for r in runs):.3f} | "
            f"{mean(r['student_test'] for r in runs):.3f} | {spread(floods[precision]['teacher'])} | "
            f"{spread(floods[precision]['student'])} |")
    delta = 100 * (mean(floods["bf16"]["teacher"]) - mean(floods["fp32"]["teacher"]))
    body += ["", "One training step (forward, backward, AdamW; median of 5, alternating), which is what "
             "`train.precision: auto` follows (bf16 from width 256):", "",
             "| backbone | chip | batch | fp32 ms | bf16 ms | bf16 speed-up |", "|---|---|---|---|---|---|", *steps]
    body += ["", f"bf16 trains the demo teacher {speed:.2f}x as fast as fp32 (mean stage seconds); the "
             f"Sen1Floods11 teacher's held-out mIoU changes by {delta:+.1f} pp (seed spread beside it)."]
    write_section("bf16 mixed precision for training (bench/precision.py)", "\n".join(body))

"""Teacher vs students on the same chips: PyTorch and ONNX Runtime, on this machine's CPU.

A Prithvi-EO-1.0-100M-shaped teacher (ViT-B, patch 16, 6 bands x 3 frames, 224 px, the
upsample head) and students cut to its first N blocks. Weights are random: speed does not
depend on their values, and no checkpoint is downloaded. Every runner is timed in
alternation on one batch (instageo.timing), so the ratios hold on a noisy machine.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.common import machine, write_section  # noqa: E402

BACKBONE = os.environ.get("BENCH_BACKBONE", "prithvi_eo_v1_100")
DEPTHS = tuple(int(v) for v in os.environ.get("BENCH_DEPTHS", "2,4,6").split(","))
CHIP, FRAMES, BANDS, CLASSES, BATCH = int(os.environ.get("BENCH_CHIP", "224")), 3, 6, 2, 4


def main() -> None:
    import torch

    from instageo.deploy import onnx
    from instageo.model.network import PixelModel, count_parameters, cut_student
    from instageo.recipe.backbones import backbone_spec
    from instageo.model.train import cost
    from instageo.timing import throughputs

    torch.manual_seed(0)
    torch.set_num_threads(os.cpu_count() or 1)
    teacher = PixelModel(backbone_spec(BACKBONE), BANDS, FRAMES, CLASSES).eval()
    models = {"teacher": teacher, **{f"student depth {d}": cut_student(teacher, d) for d in DEPTHS}}
    batch = torch.randn(BATCH, BANDS, FRAMES, CHIP, CHIP)
    runners, names = [], []
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, model in models.items():
            path = Path(tmp) / f"{name.replace(' ', '_')}.onnx"
            onnx.export(model, (batch,), path, opset=17)
            sessions[name] = onnx.session(path)
            check = onnx.parity(model, sessions[name], (batch[:1],))
            print(f"{name}: exported, max |diff| {check['max_abs_diff']:.1e}")

        def torch_runner(model):
            def run(chips):
                with torch.no_grad():
                    return model(torch.from_numpy(chips))
            return run

        for name, model in models.items():
            runners += [torch_runner(model), lambda chips, s=sessions[name]: onnx.run(s, (chips,), BATCH)]
            names += [(name, "PyTorch"), (name, "ONNX Runtime")]
        speeds = throughputs(runners, batch.numpy(), BATCH, rounds=3)
    teacher_torch = speeds[0]
    facts = {name: (count_parameters(model), cost(model, batch[:1])["gflops"]) for name, model in models.items()}
    lines = [
        f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads; onnxruntime CPU."
        f" Backbone {BACKBONE} (random weights), {BANDS} bands x {FRAMES} frames, {CHIP} px chips,"
        f" batches of {BATCH}, {CLASSES} classes, upsample head.",
        "",
        "| model | runtime | params (M) | GFLOPs/chip | chips/s | vs teacher (PyTorch) | promised by params |"
        " promised by FLOPs | ONNX vs PyTorch |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (name, runtime), speed in zip(names, speeds):
        params, gflops = facts[name]
        same_torch = speeds[names.index((name, "PyTorch"))]
        lines.append(
            f"| {name} | {runtime} | {params / 1e6:.1f} | {gflops:.1f} | {speed:.2f} | **{speed / teacher_torch:.2f}x** |"
            f" {facts['teacher'][0] / params:.2f}x | {facts['teacher'][1] / gflops:.2f}x |"
            f" {speed / same_torch:.2f}x |")
    lines += [
        "",
        "\"promised by params\" is the teacher's parameter count over the model's; the head and patch"
        " embedding run at every depth, so FLOPs are the fairer promise. Median of 3 timed rounds after a warm-up.",
    ]
    print("\n".join(lines))
    write_section("Teacher vs students, PyTorch and ONNX (bench/models.py)", "\n".join(lines))


if __name__ == "__main__":
    main()

"""The speed stage's protocol can time two identical networks the same: what ranks students
is then the architecture, not the order or the state of the machine."""

import numpy as np
import torch

from instageo.deploy import onnx
from instageo.deploy.speed import BATCH, LEAST_SECONDS, ROUNDS, _runner
from instageo.model.network import PixelModel, cut_student
from instageo.recipe.backbones import backbone_spec
from instageo.timing import measure, paired_speedup, round_seconds


def test_two_networks_of_one_architecture_time_within_ten_percent_in_both_runtimes(tmp_path):
    """A teacher and its student of the teacher's depth (the demo's shapes), as the speed stage
    times them: PyTorch and ONNX Runtime, in alternation, the median of the rounds' ratios."""
    torch.manual_seed(0)
    teacher = PixelModel(backbone_spec("instageo_ci"), 6, 3, 3)
    student = cut_student(teacher, 4)
    for parameter in student.parameters():  # other weights, as distillation leaves them
        parameter.data.mul_(0.5).add_(torch.randn_like(parameter) * 0.01)
    batch = (np.random.default_rng(0).normal(size=(BATCH, 6, 3, 32, 32)).astype(np.float32),
             np.zeros((BATCH, 3, 2), np.float32), np.zeros((BATCH, 2), np.float32))
    runners = []
    for name, model in (("teacher", teacher), ("student", student)):
        path = tmp_path / f"{name}.onnx"
        onnx.export(model, tuple(torch.from_numpy(a) for a in batch), path, 17)
        runners += [_runner(model), _runner(onnx.session(path))]
    seconds = round_seconds(runners, batch, ROUNDS, LEAST_SECONDS)
    torch_ratio, onnx_ratio = paired_speedup(seconds[2], seconds[0]), paired_speedup(seconds[3], seconds[1])
    print(f"student / teacher chips/s: PyTorch {torch_ratio:.3f}, ONNX {onnx_ratio:.3f}")
    assert 0.9 <= torch_ratio <= 1.1 and 0.9 <= onnx_ratio <= 1.1


def test_every_runner_is_warmed_up_and_the_order_changes_between_rounds():
    calls: list[str] = []
    runners = [lambda batch, n=n: calls.append(n) for n in "abc"]
    measure(runners, None, 1, rounds=6)
    warm, timed = calls[:9], calls[9:]
    assert warm == ["a"] * 3 + ["b"] * 3 + ["c"] * 3
    rounds = ["".join(timed[i:i + 3]) for i in range(0, 18, 3)]
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds) and len(set(rounds)) > 1

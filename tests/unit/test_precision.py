"""bf16 training is used where the hardware has it, detected (not assumed), and said."""

import torch

from instageo.model.train import autocast, cpu_has_bf16, resolve_precision


def test_cpu_bf16_detection_agrees_with_torchs_own_check():
    # torch's (private) check asks CPUID through its cpuinfo library; ours reads /proc/cpuinfo
    assert cpu_has_bf16() == torch.cpu._is_avx512_bf16_supported()


def test_auto_follows_the_hardware_and_the_width_and_explicit_choices_win():
    if not torch.cuda.is_available():
        assert resolve_precision("auto", 768) == ("bf16" if cpu_has_bf16() else "fp32")
        assert resolve_precision("auto", 64) == "fp32"  # narrow matrices: bf16 measured 0.89x
    assert resolve_precision("fp32", 768) == "fp32" and resolve_precision("bf16", 64) == "bf16"


def test_bf16_autocast_runs_the_model_in_bf16_and_keeps_fp32_weights():
    from instageo.model.network import PixelModel
    from instageo.recipe.backbones import backbone_spec

    model = PixelModel(backbone_spec("instageo_ci"), 2, 1, 2)
    x = torch.randn(2, 2, 1, 32, 32)
    with autocast(torch.device("cpu"), "bf16"):
        out = model(x)
    with autocast(torch.device("cpu"), "fp32"):
        plain = model(x)
    assert out.dtype == torch.bfloat16 and plain.dtype == torch.float32
    assert next(model.parameters()).dtype == torch.float32

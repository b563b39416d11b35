"""ONNX export (torch), parity checks, and the float16 and int8 twins of an exported model.

Exporter: torch's TorchScript-based exporter (``dynamo=False``). It writes one self-contained
.onnx file (the dynamo exporter splits weights into a .onnx.data side file), needs only the
`onnx` package, and matched PyTorch to ~1e-6 on these ViTs; its deprecation warning is
silenced here. The batch axis is dynamic, so a bundle predicts with any batch size.

The model's inputs are named as engine/runtime.py says (``INPUTS``); sessions, runs and the
batch choice are the engine's (imported here too, where export code uses them).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from instageo.engine.runtime import INPUTS, fastest_batch, gpu_present, run, session

__all__ = ["export", "parity", "to_float16", "quantize", "INPUTS", "fastest_batch", "gpu_present", "run", "session"]


def export(model, sample: tuple, path: Path, opset: int, output: str = "logits") -> None:
    """``sample``: model inputs (chips, temporal, location) as tensors; the coordinates are
    inputs of the ONNX model only when the model uses them. ``output``: the output's name."""
    import torch

    model.eval()
    names = list(INPUTS if model.uses_coordinates else INPUTS[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, tuple(t[:1] for t in sample[:len(names)]), str(path), dynamo=False, opset_version=opset,
            input_names=names, output_names=[output],
            dynamic_axes={**{name: {0: "batch"} for name in names}, output: {0: "batch"}},
        )


def parity(model, onnx_session, inputs: tuple) -> dict:
    """Largest |logit difference| and argmax agreement between PyTorch and ONNX (tensors in)."""
    import torch

    model.eval()
    with torch.no_grad():
        expected = model(*inputs).float().numpy()
    got = run(onnx_session, tuple(t.numpy() for t in inputs))
    return {"max_abs_diff": float(np.abs(expected - got).max()),
            "argmax_agreement": float((expected.argmax(1) == got.argmax(1)).mean())}


def to_float16(source: Path, target: Path) -> None:
    """Weights and compute in float16, inputs and outputs still float32 (onnxruntime's own
    converter), for GPUs' half-precision units."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it warns of values clipped to float16's range
        onnx.save(convert_float_to_float16(onnx.load(str(source)), keep_io_types=True), str(target))


def quantize(source: Path, target: Path) -> None:
    """Dynamic int8 quantisation of the weights of MatMul/Gemm (the transformer blocks)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"])

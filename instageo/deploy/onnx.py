"""ONNX export, parity checks and onnxruntime sessions.

Exporter: torch's TorchScript-based exporter (``dynamo=False``). It writes one self-contained
.onnx file (the dynamo exporter splits weights into a .onnx.data side file), needs only the
`onnx` package, and matched PyTorch to ~1e-6 on these ViTs; its deprecation warning is
silenced here. The batch axis is dynamic, so a bundle predicts with any batch size.

Inputs: ``chips`` (batch, bands, steps, height, width); models with TL backbones also take
``temporal_coords`` (batch, steps, 2: year, day of year) and ``location_coords`` (batch, 2:
lat, lon), the names the official Prithvi-EO-2.0 TL code gives them.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from pathlib import Path

import numpy as np


INPUTS = ("chips", "temporal_coords", "location_coords")


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


@functools.cache
def gpu_present() -> bool:
    """Whether a CUDA GPU is usable, asked of the NVIDIA driver library (libcuda) itself:
    onnxruntime-gpu lists CUDA even without a GPU (../shared/NOTES.md), and importing torch
    to ask cost prediction 650 MiB and 2 s."""
    import ctypes

    try:
        driver = ctypes.CDLL("libcuda.so.1")
    except OSError:  # no driver: no GPU
        return False
    count = ctypes.c_int(0)
    return driver.cuInit(0) == 0 and driver.cuDeviceGetCount(ctypes.byref(count)) == 0 and count.value > 0


def session(path: Path, threads: int | None = None):
    """An onnxruntime session on CUDA when a GPU is present, else on the CPU, chosen
    explicitly (so no provider fallback errors are logged on CPU machines)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if gpu_present() else ["CPUExecutionProvider"]
    return ort.InferenceSession(str(path), sess_options=options, providers=providers)


def run(onnx_session, inputs: tuple[np.ndarray, ...], batch_size: int = 16) -> np.ndarray:
    """The output (logits, or an encoder's features) for model inputs (chips, temporal, location), in batches; each input goes to the
    session only if the model has it. On CUDA through I/O binding: the inputs are copied to
    the GPU once and the logits come back once, into memory ORT does not allocate per call."""
    wanted = [i.name for i in onnx_session.get_inputs()]
    named = {name: array for name, array in zip(INPUTS, inputs) if name in wanted}
    cuda = "CUDAExecutionProvider" in onnx_session.get_providers()
    outputs = []
    for i in range(0, len(inputs[0]), batch_size):
        feed = {name: np.ascontiguousarray(array[i:i + batch_size], dtype=np.float32) for name, array in named.items()}
        if not cuda:
            outputs.append(onnx_session.run(None, feed)[0])
            continue
        binding = onnx_session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, array)
        binding.bind_output(onnx_session.get_outputs()[0].name, "cuda")
        onnx_session.run_with_iobinding(binding)
        outputs.append(binding.copy_outputs_to_cpu()[0])
    return np.concatenate(outputs)


def fastest_batch(onnx_session, tile: tuple[np.ndarray, ...], start: int, most: int = 512) -> int:
    """The batch size to predict with on a GPU: doubling from ``start`` while tiles per second
    still rise by 10% and the GPU's memory holds it (onnxruntime fails to allocate: the last
    size that fitted). ``tile``: one tile's inputs, each with a batch axis of 1."""
    best, best_rate, size = start, 0.0, start
    while size <= most:
        batch = tuple(np.repeat(array, size, axis=0) for array in tile)
        try:
            run(onnx_session, batch, size)  # warm-up: kernels chosen, memory reserved
            started = time.perf_counter()
            run(onnx_session, batch, size)
            rate = size / (time.perf_counter() - started)
        except Exception:  # onnxruntime's allocation failure (its own exception types)
            break
        if rate < best_rate * 1.1:
            break
        best, best_rate, size = size, rate, size * 2
    return best


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

"""ONNX Runtime for prediction: sessions on the GPU when there is one, batches, and which of a
bundle's model files to run (float32, its int8 twin on a CPU, its float16 twin on a GPU).

Model inputs: ``chips`` (batch, bands, steps, height, width); models with TL backbones also
take ``temporal_coords`` (batch, steps, 2: year, day of year) and ``location_coords`` (batch,
2: lat, lon), the names the official Prithvi-EO-2.0 TL code gives them. Writing models
(export, quantisation, float16) is deploy/onnx.py's, which needs torch; this needs none.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import numpy as np

INPUTS = ("chips", "temporal_coords", "location_coords")


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



def batch_size(spec, head) -> int:
    """The batch to run ``head`` with: the TileSpec's when the user chose it, or on a CPU
    (where 2 is as fast as 8); on a GPU otherwise the fastest its memory holds (fastest_batch)."""
    if spec.batch_fixed or not gpu_present():
        return spec.batch_size
    chips = spec.chips
    steps, size = chips.time.steps, chips.size
    tile = (np.zeros((1, len(chips.bands), steps, size, size), np.float32), np.zeros((1, steps, 2), np.float32),
            np.zeros((1, 2), np.float32))
    return fastest_batch(head.session, tile, spec.batch_size)


FLOAT16_AGREEMENT = 0.99  # the float16 model's classes against PyTorch's, at least


def choose_model(bundle: dict, tolerance_pp: float | None, gpu: bool | None = None) -> tuple[str, str]:
    """The bundle's model file to predict with, and why. On a GPU: float16 when the export
    made one that agrees with PyTorch, else float32 (int8's kernels are CPU ones). On a CPU:
    int8 when the export made one and it lost at most ``tolerance_pp`` on val (decided on
    val, never on test)."""
    if gpu_present() if gpu is None else gpu:
        half = bundle.get("float16")
        if not bundle.get("model_fp16") or not half:
            return bundle["model"], "float32 on the GPU: no float16 model in the bundle (export.onnx.float16)"
        if half["argmax_agreement"] < FLOAT16_AGREEMENT:
            return bundle["model"], (f"float32 on the GPU: the float16 model agrees with PyTorch on only "
                                     f"{100 * half['argmax_agreement']:.1f}% of pixels")
        return bundle["model_fp16"], (f"float16 on the GPU: agrees with PyTorch on "
                                      f"{100 * half['argmax_agreement']:.2f}% of pixels")
    check = bundle.get("int8")
    if not bundle.get("model_int8") or not check:
        return bundle["model"], "float32: no int8 model in the bundle (export.onnx.quantize)"
    if tolerance_pp is None:
        return bundle["model"], "float32: export.predict.int8_tolerance_pp is null"
    val = check.get("val")
    if val is None:
        return bundle["model"], "float32: no val split to judge the int8 model on"
    if check["metric"] == "miou":
        lost, allowed = -100 * val["delta"], tolerance_pp
        said = f"val mIoU {100 * val['delta']:+.2f} pp"
    else:
        lost, allowed = val["delta"], tolerance_pp / 100 * val["float32"]
        said = f"val RMSE {val['delta']:+.4g} ({100 * val['delta'] / max(val['float32'], 1e-12):+.2f}%)"
    if lost <= allowed:
        return bundle["model_int8"], f"int8: {said}, within {tolerance_pp:g} (export.predict.int8_tolerance_pp)"
    return bundle["model"], f"float32: int8 {said}, beyond {tolerance_pp:g} (export.predict.int8_tolerance_pp)"


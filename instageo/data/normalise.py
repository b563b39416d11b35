"""Band normalisation, in one place for training (model/data.py), prediction
(engine/heads.py) and the benches: z-scores with the bundle's or the train split's band means and
standard deviations, nodata (NaN) as 0, laid out as the models take it."""

from __future__ import annotations

import numpy as np

STD_FLOOR = 1e-6  # a constant band (std 0) gives zeros, not infinities


class Normaliser:
    """``normaliser(image)``: a (T, C, H, W) stack as the model's (C, T, H, W) float32 input."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean = np.array(mean, np.float32)[None, :, None, None]
        self.std = np.maximum(np.array(std, np.float32), STD_FLOOR)[None, :, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        scored = np.nan_to_num((image - self.mean) / self.std, nan=0.0)
        return np.ascontiguousarray(scored.transpose(1, 0, 2, 3), dtype=np.float32)

    @classmethod
    def of_bundle(cls, bundle: dict) -> Normaliser:
        return cls(bundle["normalization"]["mean"], bundle["normalization"]["std"])

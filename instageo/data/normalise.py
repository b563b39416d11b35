"""Band normalisation, in one place for training (model/data.py), prediction
(engine/heads.py) and the benches: z-scores with the bundle's or the train split's band means and
standard deviations, nodata (NaN) as 0, laid out as the models take it."""

from __future__ import annotations

import numpy as np

STD_FLOOR = 1e-6  # a constant band (std 0) gives zeros, not infinities


class Normaliser:
    """``normaliser(image)``: a (T, C, H, W) stack as the model's (C, T, H, W) float32 input."""

    def __init__(self, mean: list[float], std: list[float]):
        self.mean = np.array(mean, np.float32)[:, None, None, None]  # (C, 1, 1, 1): the output's layout
        self.std = np.maximum(np.array(std, np.float32), STD_FLOOR)[:, None, None, None]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        # one array, written in the output's layout and changed in place: ~0.65 of the time
        # of four temporaries (a 224 px tile of 3 steps x 6 bands: 0.8 against 1.2-1.3 ms)
        steps, bands, height, width = image.shape
        scored = np.empty((bands, steps, height, width), np.float32)
        np.subtract(image.transpose(1, 0, 2, 3), self.mean, out=scored)
        scored /= self.std
        return np.nan_to_num(scored, copy=False, nan=0.0)

    @classmethod
    def of_bundle(cls, bundle: dict) -> Normaliser:
        return cls(bundle["normalization"]["mean"], bundle["normalization"]["std"])

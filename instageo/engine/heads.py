"""Heads: what runs on the tiles. ``ClassHead`` is a bundle's model (class probabilities,
and the input's colour for rgb.tif); ``EncoderHead`` its encoder alone (the PCA of its
features, per pixel). Both prepare tiles the same way (``TileHead.prepare``: normalised as
bundle.json says, nodata as 0, with the steps' dates and the tile centre for TL models) and
open their ONNX session on first use, so they pickle to dask workers without one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from instageo.data.chip_build import ChipJob, Stack
from instageo.data.coordinates import location, temporal
from instageo.data.normalise import STD_FLOOR, Normaliser
from instageo.engine import runtime
from instageo.engine.vectors import project


def blend_window(size: int, overlap: int) -> np.ndarray:
    """Weights that ramp smoothly (sin^2) over the overlap at each edge, 1 inside."""
    ramp = np.ones(size, np.float32)
    if overlap > 0:
        edge = np.sin(np.linspace(0, np.pi / 2, overlap + 2)[1:-1]) ** 2
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return np.outer(ramp, ramp)


@dataclass(frozen=True)
class InputColour:
    """How rgb.tif shows a step's input, as three display channels from 0 to 1. True colour:
    red, green, blue reflectance 0-0.3. Radar (no red/green/blue, but VV and VH): VV, VH and
    VV - VH, each as the band's z-score (the bundle's normalisation) from -2.5 to 2.5, which
    holds whatever the units (dB or linear)."""

    name: str
    bands: tuple[int, ...]
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @classmethod
    def of(cls, bands: list[str], bundle: dict) -> InputColour | None:
        if {"red", "green", "blue"} <= set(bands):
            return cls("true colour", tuple(bands.index(b) for b in ("red", "green", "blue")))
        if {"vv", "vh"} <= set(bands):
            picked = tuple(bands.index(b) for b in ("vv", "vh"))
            norm = bundle["normalization"]
            return cls("false colour (VV, VH, VV-VH)", picked, tuple(norm["mean"][i] for i in picked),
                       tuple(max(norm["std"][i], STD_FLOOR) for i in picked))
        return None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(3, H, W) display values of one step's (C, H, W) input (NaN stays NaN)."""
        if not self.mean:
            return image[list(self.bands)] / np.float32(0.3)
        vv, vh = ((image[i] - m) / s for i, m, s in zip(self.bands, self.mean, self.std))
        return (np.stack([vv, vh, vv - vh]) + 2.5) / 5



class TileHead:
    """An ONNX model of a bundle over batches of tile stacks (batches may span tile rows)."""

    colour: InputColour | None = None

    def __init__(self, path: Path, bundle: dict, size: int, overlap: int):
        self.path, self.size = Path(path), size
        self.normalise = Normaliser.of_bundle(bundle)
        self.weight = blend_window(size, overlap)
        self._session = None

    @property
    def session(self):
        if self._session is None:
            self._session = runtime.session(self.path)
        return self._session

    def __getstate__(self) -> dict:  # to a dask worker: it opens its own session
        return {**self.__dict__, "_session": None}

    def prepare(self, job: ChipJob, stack: Stack | str) -> tuple | None:
        """A read tile and its model inputs (pixels normalised, nodata as 0, (C, T, H, W); the
        steps' dates and the tile centre for TL models); None for a skipped tile. The reading
        threads call this, so the model's thread does not wait on it."""
        if isinstance(stack, str):
            return None
        return stack, self.normalise(stack.image), temporal(stack.dates), location(job.lon, job.lat)

    def run(self, batch: list) -> np.ndarray:
        """The model's output for a batch of prepared tiles."""
        inputs = tuple(np.stack([entry[i] for entry in batch]) for i in (2, 3, 4))
        return runtime.run(self.session, inputs, len(batch))

    def weights(self, stack: Stack) -> np.ndarray:
        """The tile's blending window, 0 where no step saw anything (left to its neighbours)."""
        return np.where(stack.invalid.all(axis=0), 0.0, self.weight)


class ClassHead(TileHead):
    """Class probabilities (the softmax of the logits) and, with ``colour``, the input's colour."""

    def __init__(self, path: Path, bundle: dict, size: int, overlap: int, colour: InputColour | None):
        super().__init__(path, bundle, size, overlap)
        self.channels = len(bundle["classes"])
        self.colour = colour

    def predict(self, batch: list) -> list[tuple]:
        probabilities = self.run(batch)  # logits, made softmax in place
        probabilities -= probabilities.max(axis=1, keepdims=True)
        np.exp(probabilities, out=probabilities)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        return [(grid, tile, self.weights(stack), self.colour(stack.image[-1]) if self.colour else None)
                for (grid, stack, *_), tile in zip(batch, probabilities)]


class EncoderHead(TileHead):
    """The encoder's features projected on the PCA (bundle/embeddings.json), per pixel (nearest:
    a patch's vector over its pixels)."""

    def __init__(self, path: Path, bundle: dict, size: int, overlap: int, pca: dict):
        super().__init__(path, bundle, size, overlap)
        self.pca, self.patch, self.channels = pca, pca["patch"], len(pca["components"])

    def predict(self, batch: list) -> list[tuple]:
        features = project(self.run(batch), self.pca, axis=1)
        pixels = features.repeat(self.patch, axis=2).repeat(self.patch, axis=3)[:, :, :self.size, :self.size]
        return [(grid, tile, self.weights(stack), None) for (grid, stack, *_), tile in zip(batch, pixels)]

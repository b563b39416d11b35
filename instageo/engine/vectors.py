"""Embedding vectors as the embeddings stage stores them (numpy only): a PCA of the encoder's
features, unit length, and codes: int8 as AlphaEarth lays it out (round(127 x value), -128
nodata), the sign bits (binary, 8 per byte), or float32.
"""

from __future__ import annotations

import math

import numpy as np

INT8_SCALE, INT8_NODATA = 127, -128


def fit_pca(features: np.ndarray, dims: int) -> dict:
    """Mean, the first ``dims`` principal axes and their share of the variance, of (N, D)."""
    features = features.astype(np.float64)
    mean = features.mean(0)
    _, singular, axes = np.linalg.svd(features - mean, full_matrices=False)
    dims = min(dims, axes.shape[0])
    variance = singular**2 / max(float((singular**2).sum()), 1e-30)
    return {"mean": mean.tolist(), "components": axes[:dims].tolist(), "explained_variance": variance[:dims].tolist()}


def project(features: np.ndarray, pca: dict, axis: int = -1) -> np.ndarray:
    """PCA coordinates of vectors along ``axis``."""
    moved = np.moveaxis(features, axis, -1).astype(np.float32)
    out = (moved - np.asarray(pca["mean"], np.float32)) @ np.asarray(pca["components"], np.float32).T
    return np.moveaxis(out, -1, axis)


def unit(vectors: np.ndarray, axis: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length vectors along ``axis`` and where they exist (a zero or NaN vector does not)."""
    norm = np.sqrt(np.nansum(vectors.astype(np.float32) ** 2, axis=axis, keepdims=True))
    valid = np.squeeze((norm > 0) & np.isfinite(norm), axis)
    return np.where(norm > 0, vectors / np.where(norm > 0, norm, 1), 0).astype(np.float32), valid


def encode(vectors: np.ndarray, kind: str, axis: int = -1) -> np.ndarray:
    """Codes of unit vectors: int8, packed sign bits (uint8) or float32."""
    if kind == "int8":
        return np.clip(np.rint(vectors * INT8_SCALE), -INT8_SCALE, INT8_SCALE).astype(np.int8)
    if kind == "binary":
        return np.packbits(vectors > 0, axis=axis)
    return vectors.astype(np.float32)


def decode(codes: np.ndarray, kind: str, dims: int, axis: int = -1) -> np.ndarray:
    """Vectors of codes (what a user of the COG does; embeddings.json says the same)."""
    if kind == "int8":
        return codes.astype(np.float32) / INT8_SCALE
    if kind == "binary":
        bits = np.unpackbits(codes, axis=axis, count=dims).astype(np.float32)
        return (2 * bits - 1) / math.sqrt(dims)
    return codes.astype(np.float32)

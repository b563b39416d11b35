"""Backbone architectures and their pretraining metadata: plain data, no torch import, so
recipes can be validated against the registry without loading torch."""

from __future__ import annotations

from dataclasses import dataclass

from instageo.errors import InputError

HLS_BANDS = ("blue", "green", "red", "nir", "swir16", "swir22")


@dataclass(frozen=True)
class BackboneSpec:
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    tubelet_size: int = 1
    mlp_ratio: float = 4.0
    # data metadata of the pretraining (kept as data, not code)
    bands: tuple[str, ...] = HLS_BANDS
    mean: tuple[float, ...] | None = None  # reflectance units
    std: tuple[float, ...] | None = None


# Prithvi-EO-1.0 pretraining statistics on HLS (its config lists them x 10000).
_PRITHVI_MEAN = (0.07752, 0.10810, 0.12286, 0.24972, 0.22042, 0.16108)
_PRITHVI_STD = (0.12815, 0.12700, 0.13995, 0.13683, 0.12917, 0.11545)

BACKBONES: dict[str, BackboneSpec] = {
    # Prithvi-EO-1.0-100M: ViT-B, patch 16, 3 frames (Jakubik et al., 2023)
    "prithvi_eo_v1_100": BackboneSpec(768, 12, 12, 16, mean=_PRITHVI_MEAN, std=_PRITHVI_STD),
    # Prithvi-EO-2.0-300M: ViT-L, patch 16; 600M: ViT-H, patch 14 (Szwarcman et al., 2024)
    "prithvi_eo_v2_300": BackboneSpec(1024, 24, 16, 16, mean=_PRITHVI_MEAN, std=_PRITHVI_STD),
    "prithvi_eo_v2_600": BackboneSpec(1280, 32, 16, 14, mean=_PRITHVI_MEAN, std=_PRITHVI_STD),
    # Prithvi-EO-2.0-tiny: ViT-Ti sized
    "prithvi_eo_tiny": BackboneSpec(192, 12, 3, 16, mean=_PRITHVI_MEAN, std=_PRITHVI_STD),
    # for CI and the demo: small enough to train on two CPU cores in seconds
    "instageo_ci": BackboneSpec(64, 4, 4, 4, mean=_PRITHVI_MEAN, std=_PRITHVI_STD),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError(f"backbone '{name}' is not valid, should be one of {sorted(BACKBONES)}")
    return BACKBONES[name]



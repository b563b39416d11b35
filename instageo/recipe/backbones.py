"""Backbone architectures and their pretraining metadata: plain data, no torch import, so
recipes can be validated against the registry without loading torch.

Names and numbers follow the official Prithvi-EO configs (terratorch's ``prithvi_vit.py``),
so a name here means the same model as in terratorch's registry; a test reads that file and
checks every shared name against it.
"""

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
    # EO-2.0 "TL": temporal (year, day of year) and location (lat, lon) encoders with a
    # learned scale each, added to the patch tokens
    coords: bool = False
    # data metadata of the pretraining (kept as data, not code)
    bands: tuple[str, ...] = HLS_BANDS
    mean: tuple[float, ...] | None = None  # reflectance units (the configs list DN = x 10000)
    std: tuple[float, ...] | None = None
    published: str | None = None  # the checkpoint these weights come from


# Pretraining statistics of HLS, in DN as the official configs list them.
_V1_MEAN = (775.229, 1080.993, 1228.586, 2497.202, 2204.214, 1610.832)
_V1_STD = (1281.526, 1270.030, 1399.480, 1368.345, 1291.676, 1154.506)
_V2_MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
_V2_STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


def _reflectance(values: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(round(v / 10000, 7) for v in values)


V1 = {"mean": _reflectance(_V1_MEAN), "std": _reflectance(_V1_STD)}
V2 = {"mean": _reflectance(_V2_MEAN), "std": _reflectance(_V2_STD)}
_HF = "ibm-nasa-geospatial"

BACKBONES: dict[str, BackboneSpec] = {
    # Prithvi-EO-1.0-100M: ViT-B, patch 16, pretrained on 3 frames (Jakubik et al., 2023)
    "prithvi_eo_v1_100": BackboneSpec(768, 12, 12, 16, **V1,
                                      published=f"{_HF}/Prithvi-EO-1.0-100M Prithvi_EO_V1_100M.pt"),
    # Prithvi-EO-2.0 (Szwarcman et al., 2024): ViT-B / L (patch 16), ViT-H (patch 14); TL
    # variants add the temporal and location encoders
    "prithvi_eo_v2_100": BackboneSpec(768, 12, 12, 16, **V2),  # configured, never published
    "prithvi_eo_v2_100_tl": BackboneSpec(768, 12, 12, 16, coords=True, **V2,
                                         published=f"{_HF}/Prithvi-EO-2.0-100M-TL Prithvi_EO_V2_100M_TL.pt"),
    "prithvi_eo_v2_300": BackboneSpec(1024, 24, 16, 16, **V2,
                                      published=f"{_HF}/Prithvi-EO-2.0-300M Prithvi_EO_V2_300M.pt"),
    "prithvi_eo_v2_300_tl": BackboneSpec(1024, 24, 16, 16, coords=True, **V2,
                                         published=f"{_HF}/Prithvi-EO-2.0-300M-TL Prithvi_EO_V2_300M_TL.pt"),
    "prithvi_eo_v2_600": BackboneSpec(1280, 32, 16, 14, **V2,
                                      published=f"{_HF}/Prithvi-EO-2.0-600M Prithvi_EO_V2_600M.pt"),
    "prithvi_eo_v2_600_tl": BackboneSpec(1280, 32, 16, 14, coords=True, **V2,
                                         published=f"{_HF}/Prithvi-EO-2.0-600M-TL Prithvi_EO_V2_600M_TL.pt"),
    "prithvi_eo_v2_tiny_tl": BackboneSpec(192, 12, 3, 16, coords=True, **V2,
                                          published=f"{_HF}/Prithvi-EO-2.0-tiny-TL Prithvi_EO_V2_tiny_TL.pt"),
    # terratorch's small test configuration (no published checkpoint)
    "prithvi_eo_tiny": BackboneSpec(256, 4, 4, 16, **V2),
    # for CI and the demo: small enough to train on two CPU cores in seconds (no checkpoint)
    "instageo_ci": BackboneSpec(64, 4, 4, 4),
}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise InputError(f"backbone '{name}' is not valid, should be one of {sorted(BACKBONES)}")
    return BACKBONES[name]

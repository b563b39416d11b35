"""Prithvi-EO encoders: a ViT over (time, bands) with 3D patch embedding.

Numerically the official Prithvi-EO 1.0 / 2.0 encoder (``PrithviViT`` in terratorch's
``prithvi_mae.py``; tests/unit/test_prithvi_parity.py compares the two on the same weights):
- the fixed 3D sin-cos position table concatenates width | height | time channels (6/16,
  6/16 and 4/16 of the embedding), computed for the input's own (frames, height, width) grid
  (the official model computes it for the grid it is built for; ours is built per input);
- LayerNorm eps 1e-5 in every block and the final norm, fixed here rather than taken from
  timm's ``Block`` default (which changed between timm releases);
- the cls token gets no position (the official table's cls row is zeros);
- EO-2.0 "TL" backbones add a temporal encoding (year, day of year of each frame) and a
  location encoding (lat, lon of the chip centre), each times a learned scale, to the patch
  tokens before the blocks.

Parameter names follow the published checkpoints (``patch_embed.proj``, ``cls_token``,
``blocks.N.*``, ``norm``, ``temporal_embed_enc.scale``, ``location_embed_enc.scale``), so
their weights load by name. Architecture arguments (``BackboneSpec``) are kept apart from data
metadata (pretraining bands, means and stds), like timm's model configs.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import torch
from torch import nn

from instageo.recipe.backbones import BACKBONES, HLS_BANDS, BackboneSpec, backbone_spec

__all__ = ["BACKBONES", "HLS_BANDS", "BackboneSpec", "PrithviEncoder", "backbone_spec", "sincos_3d"]

LayerNorm = partial(nn.LayerNorm, eps=1e-5)  # Prithvi's norm_layer: torch's LayerNorm default


def _sincos_1d(positions: np.ndarray, channels: int) -> np.ndarray:
    """(len(positions), channels): sin(p * w_k) | cos(p * w_k), w_k = 10000^(-2k/channels)."""
    omega = 1.0 / 10000 ** (np.arange(channels // 2, dtype=np.float64) / (channels / 2))
    angles = positions.astype(np.float64)[:, None] * omega[None, :]
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)


def sincos_3d(frames: int, height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed position table (frames*height*width, dim), tokens in (t, h, w) order, channels
    width | height | time, as Prithvi-EO's ``get_3d_sincos_pos_embed``."""
    if dim % 16:
        raise ValueError(f"embedding size {dim} must be a multiple of 16 for the 3D position table")
    space, time = dim // 16 * 6, dim // 16 * 4
    w = _sincos_1d(np.arange(width), space)[None, None, :, :]
    h = _sincos_1d(np.arange(height), space)[None, :, None, :]
    t = _sincos_1d(np.arange(frames), time)[:, None, None, :]
    grid = np.concatenate([np.broadcast_to(w, (frames, height, width, space)),
                           np.broadcast_to(h, (frames, height, width, space)),
                           np.broadcast_to(t, (frames, height, width, time))], axis=-1)
    return torch.from_numpy(grid.reshape(-1, dim).astype(np.float32))


def sincos_values(values: torch.Tensor, channels: int) -> torch.Tensor:
    """(N,) values -> (N, channels) sin | cos, in the values' float dtype: the official
    encoders compute these in float32, where year-sized values make rounding visible."""
    omega = torch.arange(channels // 2, dtype=values.dtype, device=values.device)
    omega = 1.0 / 10000 ** (omega / (channels / 2.0))
    angles = values.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class CoordinateEncoder(nn.Module):
    """Two coordinates (year, day of year; or lat, lon) -> half the channels each, times a
    learned scale (starts at 0.1, as in Prithvi-EO-2.0 TL)."""

    def __init__(self, dim: int):
        super().__init__()
        self.first, self.second = dim // 2, dim - dim // 2
        self.scale = nn.Parameter(torch.full((1,), 0.1))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:  # (..., 2) -> (..., dim)
        flat = coords.reshape(-1, 2)
        table = torch.cat([sincos_values(flat[:, 0], self.first), sincos_values(flat[:, 1], self.second)], dim=1)
        return self.scale * table.reshape(*coords.shape[:-1], -1)


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, spec: BackboneSpec):
        super().__init__()
        size = (spec.tubelet_size, spec.patch_size, spec.patch_size)
        self.proj = nn.Conv3d(in_chans, spec.embed_dim, kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, D, T', H', W')
        return self.proj(x)


class PrithviEncoder(nn.Module):
    """Input (B, C, T, H, W), and for TL backbones ``temporal`` (B, T, 2: year, day of year)
    and ``location`` (B, 2: lat, lon); output tokens (B, T', H', W', D) after the final norm."""

    def __init__(self, spec: BackboneSpec, in_chans: int, depth: int | None = None):
        from timm.models.vision_transformer import Block

        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(in_chans, spec)
        if spec.coords:
            self.temporal_embed_enc = CoordinateEncoder(spec.embed_dim)
            self.location_embed_enc = CoordinateEncoder(spec.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.blocks = nn.ModuleList(
            Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, qkv_bias=True, norm_layer=LayerNorm)
            for _ in range(spec.depth if depth is None else depth)
        )
        self.norm = LayerNorm(spec.embed_dim)
        nn.init.normal_(self.cls_token, std=0.02)
        self._pos_cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def position(self, grid: tuple[int, int, int], device) -> torch.Tensor:
        if grid not in self._pos_cache:
            self._pos_cache[grid] = sincos_3d(*grid, self.spec.embed_dim)
        return self._pos_cache[grid].to(device)

    def forward(self, x: torch.Tensor, depth: int | None = None, temporal: torch.Tensor | None = None,
                location: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens after the first ``depth`` blocks (all by default) and the final norm."""
        tokens = self.patch_embed(x)
        batch, dim, frames, height, width = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2) + self.position((frames, height, width), x.device)
        if self.spec.coords and temporal is not None:  # one encoding per frame, for all its tokens
            tokens = tokens + self.temporal_embed_enc(temporal).repeat_interleave(height * width, dim=1)
        if self.spec.coords and location is not None:
            tokens = tokens + self.location_embed_enc(location)[:, None, :]
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        for block in list(self.blocks)[:depth]:
            tokens = block(tokens)
        tokens = self.norm(tokens)[:, 1:]
        return tokens.reshape(batch, frames, height, width, dim)

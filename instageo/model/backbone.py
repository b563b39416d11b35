"""Prithvi-EO style encoders: a ViT over (time, bands) with 3D patch embedding.

Architecture arguments (``BackboneSpec``) are kept apart from data metadata (pretraining
bands, means and stds), like timm's model configs. Parameter names follow the published
Prithvi checkpoints (``patch_embed.proj``, ``cls_token``, ``blocks.N.*``, ``norm``), so
their weights load by name. The position embedding is the fixed 3D sin-cos of Prithvi,
computed for whatever (frames, height, width) grid the input has, so chips of any size and
any number of time steps work without interpolating learned weights.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from instageo.model.specs import BACKBONES, HLS_BANDS, BackboneSpec, backbone_spec

__all__ = ["BACKBONES", "HLS_BANDS", "BackboneSpec", "PrithviEncoder", "backbone_spec", "sincos_3d"]

def sincos_3d(frames: int, height: int, width: int, dim: int) -> torch.Tensor:
    """Fixed 3D sin-cos position embedding (frames*height*width, dim), Prithvi's split:
    a quarter of the channels for time, three eighths each for height and width."""
    time_dim = dim // 4
    space_dim = (dim - time_dim) // 2
    time_dim = dim - 2 * space_dim

    def axis(length: int, channels: int) -> np.ndarray:
        half = channels // 2
        omega = 1.0 / 10000 ** (np.arange(half, dtype=np.float64) / max(half, 1))
        angles = np.arange(length, dtype=np.float64)[:, None] * omega[None, :]
        table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
        return np.pad(table, ((0, 0), (0, channels - table.shape[1])))

    t, h, w = axis(frames, time_dim), axis(height, space_dim), axis(width, space_dim)
    grid = np.concatenate([
        np.broadcast_to(t[:, None, None, :], (frames, height, width, time_dim)),
        np.broadcast_to(h[None, :, None, :], (frames, height, width, space_dim)),
        np.broadcast_to(w[None, None, :, :], (frames, height, width, space_dim)),
    ], axis=-1)
    return torch.from_numpy(grid.reshape(-1, dim).astype(np.float32))


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, spec: BackboneSpec):
        super().__init__()
        size = (spec.tubelet_size, spec.patch_size, spec.patch_size)
        self.proj = nn.Conv3d(in_chans, spec.embed_dim, kernel_size=size, stride=size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) -> (B, D, T', H', W')
        return self.proj(x)


class PrithviEncoder(nn.Module):
    """Input (B, C, T, H, W); output tokens (B, T', H', W', D) after the final norm."""

    def __init__(self, spec: BackboneSpec, in_chans: int, depth: int | None = None):
        from timm.models.vision_transformer import Block

        super().__init__()
        self.spec = spec
        self.patch_embed = PatchEmbed(in_chans, spec)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.embed_dim))
        self.blocks = nn.ModuleList(
            Block(spec.embed_dim, spec.num_heads, spec.mlp_ratio, qkv_bias=True)
            for _ in range(spec.depth if depth is None else depth)
        )
        self.norm = nn.LayerNorm(spec.embed_dim, eps=1e-6)
        nn.init.normal_(self.cls_token, std=0.02)
        self._pos_cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def position(self, grid: tuple[int, int, int], device) -> torch.Tensor:
        if grid not in self._pos_cache:
            self._pos_cache[grid] = sincos_3d(*grid, self.spec.embed_dim)
        return self._pos_cache[grid].to(device)

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Tokens after the first ``depth`` blocks (all by default) and the final norm."""
        tokens = self.patch_embed(x)
        batch, dim, frames, height, width = tokens.shape
        tokens = tokens.flatten(2).transpose(1, 2) + self.position((frames, height, width), x.device)
        tokens = torch.cat([self.cls_token.expand(batch, -1, -1), tokens], dim=1)
        for block in list(self.blocks)[:depth]:
            tokens = block(tokens)
        tokens = self.norm(tokens)[:, 1:]
        return tokens.reshape(batch, frames, height, width, dim)

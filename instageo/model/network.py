"""Encoder + head for pixel tasks, and the student cut from a teacher.

Heads see the encoder's tokens with the time steps stacked as channels, (B, T'*D, H', W'):
- ``upsample``: log2(patch) transposed convolutions (x2 each), as in Prithvi's
  segmentation head, then a 1x1 classifier;
- ``light``: a 1x1 classifier on the tokens and bilinear upsampling, so a shallow student's
  cost is not dominated by its head.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from instageo.model.backbone import BackboneSpec, PrithviEncoder


class BatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics are the whole batch's when DDP splits the batch
    over processes (accelerate launch), as one process computes them; torch's SyncBatchNorm
    does this on GPUs only. The same parameters and buffers as nn.BatchNorm2d; in eval mode
    (and in ONNX) it is nn.BatchNorm2d."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce  # differentiable: gradients flow back too

        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        dist.all_reduce(count)
        sums = all_reduce(torch.cat([x.sum((0, 2, 3)), (x * x).sum((0, 2, 3))]))
        mean, square = (sums / count.to(x.dtype)).chunk(2)
        var = (square - mean * mean).clamp(min=0)  # biased, as BatchNorm normalises with it
        with torch.no_grad():
            momentum = self.momentum if self.momentum is not None else 1 / (int(self.num_batches_tracked) + 1)
            n = float(count)
            self.running_mean.mul_(1 - momentum).add_(momentum * mean.detach())
            self.running_var.mul_(1 - momentum).add_(momentum * var.detach() * n / max(n - 1, 1))
            self.num_batches_tracked.add_(1)
        shape = (1, -1, 1, 1)
        normed = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        return normed * self.weight.view(shape) + self.bias.view(shape)


class UpsampleHead(nn.Module):
    def __init__(self, channels: int, outputs: int, patch: int, width: int = 64):
        super().__init__()
        steps = max(int(round(math.log2(patch))), 0)
        layers: list[nn.Module] = []
        size = channels
        for _ in range(steps):
            layers += [nn.ConvTranspose2d(size, width, 2, stride=2), BatchNorm2d(width), nn.ReLU()]
            size = width
        self.up = nn.Sequential(*layers)
        self.classify = nn.Conv2d(size, outputs, 1)
        self.patch = patch

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.classify(self.up(features))
        return out if out.shape[-2:] == size else F.interpolate(out, size=size, mode="bilinear", align_corners=False)


class LightHead(nn.Module):
    def __init__(self, channels: int, outputs: int):
        super().__init__()
        self.classify = nn.Conv2d(channels, outputs, 1)

    def forward(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return F.interpolate(self.classify(features), size=size, mode="bilinear", align_corners=False)


class PixelModel(nn.Module):
    """(B, C, T, H, W) -> (B, outputs, H, W) logits (or values, for regression). TL backbones
    also take ``temporal`` (B, T, 2: year, day of year) and ``location`` (B, 2: lat, lon);
    the others ignore them."""

    def __init__(self, spec: BackboneSpec, in_chans: int, frames: int, outputs: int,
                 head: str = "upsample", depth: int | None = None):
        super().__init__()
        self.encoder = PrithviEncoder(spec, in_chans, depth)
        frames_out = max(frames // spec.tubelet_size, 1)
        channels = spec.embed_dim * frames_out
        self.head = (UpsampleHead(channels, outputs, spec.patch_size) if head == "upsample"
                     else LightHead(channels, outputs))

    @property
    def uses_coordinates(self) -> bool:
        return self.encoder.spec.coords

    def forward(self, x: torch.Tensor, temporal: torch.Tensor | None = None,
                location: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encoder(x, temporal=temporal, location=location), x.shape[-2:])

    def decode(self, tokens: torch.Tensor, size) -> torch.Tensor:
        """Head output for encoder tokens (B, T', H', W', D)."""
        batch, frames, height, width, dim = tokens.shape
        features = tokens.permute(0, 1, 4, 2, 3).reshape(batch, frames * dim, height, width)
        return self.head(features, size)


def cut_student(teacher: PixelModel, depth: int, copy_head: bool = True) -> PixelModel:
    """A student keeping the teacher's patch embedding, first ``depth`` blocks and final norm
    (and its head, unless ``copy_head`` is False: then the head is freshly initialised)."""
    if not 1 <= depth <= len(teacher.encoder.blocks):
        raise ValueError(f"student depth {depth} must be between 1 and the teacher's {len(teacher.encoder.blocks)}")
    student = copy.deepcopy(teacher)
    student.encoder.blocks = nn.ModuleList(list(student.encoder.blocks)[:depth])
    if not copy_head:
        for module in student.head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    return student


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

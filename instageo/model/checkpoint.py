"""Load published Prithvi-EO encoder weights from a local file, in their own key layouts.

- EO-1.0 (``Prithvi_EO_V1_100M.pt``): a plain state dict with un-prefixed encoder keys
  (``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight`` ...) next to decoder keys
  (``decoder_*``) and ``mask_token``, which are dropped.
- EO-2.0: keys prefixed ``encoder.`` and ``decoder.``; sometimes wrapped in ``{"model": ...}``.

The fixed position embedding is recomputed, never loaded. When the recipe's bands are a
subset or a reordering of the pretraining bands, the patch-embedding kernel is remapped band
by band; a band the model never saw starts from the mean kernel of the pretrained bands.
"""

from __future__ import annotations

from pathlib import Path

import torch

from instageo.errors import InputError
from instageo.model.backbone import PrithviEncoder

DROPPED = ("pos_embed", "mask_token", "decoder")


def encoder_state(raw: dict) -> dict[str, torch.Tensor]:
    """The encoder's tensors of a checkpoint in either Prithvi layout, un-prefixed."""
    for wrapper in ("model", "state_dict"):
        if wrapper in raw and isinstance(raw[wrapper], dict):
            raw = raw[wrapper]
    prefixed = any(key.startswith("encoder.") for key in raw)
    state = {}
    for key, value in raw.items():
        if prefixed:
            if not key.startswith("encoder."):
                continue
            key = key[len("encoder."):]
        if key.startswith(DROPPED):
            continue
        state[key] = value
    return state


def remap_bands(kernel: torch.Tensor, pretrained: tuple[str, ...], wanted: list[str]) -> torch.Tensor:
    """Patch-embedding kernel (D, C_pretrained, t, p, p) -> (D, len(wanted), t, p, p)."""
    mean = kernel.mean(dim=1)
    columns = [kernel[:, pretrained.index(band)] if band in pretrained else mean for band in wanted]
    return torch.stack(columns, dim=1)


def load_encoder(encoder: PrithviEncoder, path: Path, bands: list[str]) -> list[str]:
    """Load weights into ``encoder`` (which may keep fewer blocks); returns the keys it kept
    from the file. Raises InputError naming the file for anything that does not fit."""
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(exc).__name__})") from None
    if not isinstance(raw, dict):
        raise InputError(f"{path}: expected a state dict, found {type(raw).__name__}")
    state = encoder_state(raw)
    kernel = state.get("patch_embed.proj.weight")
    if kernel is None:
        raise InputError(f"{path}: no patch_embed.proj.weight: not a Prithvi-EO checkpoint")
    state["patch_embed.proj.weight"] = remap_bands(kernel, encoder.spec.bands, bands)
    own = encoder.state_dict()
    kept = {k: v for k, v in state.items() if k in own}
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in kept.items() if v.shape != own[k].shape]
    if wrong:
        raise InputError(f"{path}: checkpoint does not fit backbone: {wrong[0]}"
                         + (f" (+{len(wrong) - 1} more)" if len(wrong) > 1 else ""))
    missing = [k for k in own if k not in kept]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {missing[0]}" + (f" (+{len(missing) - 1} more)" if len(missing) > 1 else ""))
    encoder.load_state_dict(kept)
    return sorted(kept)

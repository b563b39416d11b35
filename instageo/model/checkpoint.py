"""Load published Prithvi-EO encoder weights from a local file, in their own key layouts.

- EO-1.0 (``Prithvi_EO_V1_100M.pt``): a plain state dict with un-prefixed encoder keys
  (``patch_embed.proj.weight``, ``blocks.0.attn.qkv.weight`` ...) next to decoder keys
  (``decoder_*``), ``mask_token`` and the ``pos_embed`` buffer.
- EO-2.0: keys prefixed ``encoder.`` and ``decoder.``; sometimes wrapped in ``{"model": ...}``.
  TL checkpoints add ``temporal_embed_enc.scale`` and ``location_embed_enc.scale``.

Every tensor is accounted for: the decoder, mask token and position buffers are expected and
dropped (the fixed position table is recomputed); blocks deeper than the encoder keeps are
dropped (a student-sized encoder); the TL encoders' scales, when the backbone has no TL
encoders, are dropped with a warning naming them; anything else is an error naming the tensor
and the file. When the recipe's bands are a subset or a reordering of the pretraining bands,
the patch-embedding kernel is remapped band by band; a band the model never saw starts from
the mean kernel of the pretrained bands.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from instageo.errors import InputError
from instageo.model.backbone import PrithviEncoder

EXPECTED_DROPS = ("pos_embed", "mask_token", "decoder")
COORDINATE_ENCODERS = ("temporal_embed_enc.", "location_embed_enc.")


@dataclass
class Loaded:
    kept: list[str]
    unused: list[str] = field(default_factory=list)  # known, deliberately unused (warn)


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
                continue  # decoder.* and anything beside the encoder
            key = key[len("encoder."):]
        if key.startswith(EXPECTED_DROPS):
            continue
        state[key] = value
    return state


def remap_bands(kernel: torch.Tensor, pretrained: tuple[str, ...], wanted: list[str]) -> torch.Tensor:
    """Patch-embedding kernel (D, C_pretrained, t, p, p) -> (D, len(wanted), t, p, p)."""
    mean = kernel.mean(dim=1)
    columns = [kernel[:, pretrained.index(band)] if band in pretrained else mean for band in wanted]
    return torch.stack(columns, dim=1)


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (f" (+{len(keys) - 3} more)" if len(keys) > 3 else "")


def load_encoder(encoder: PrithviEncoder, path: Path, bands: list[str]) -> Loaded:
    """Load weights into ``encoder`` (which may keep fewer blocks). Raises InputError naming
    the file and the tensor for anything that does not fit."""
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
    deeper = re.compile(rf"blocks\.(\d+)\.")
    kept, unused, unknown = {}, [], []
    for key, value in state.items():
        block = deeper.match(key)
        if key in own:
            kept[key] = value
        elif block and int(block.group(1)) >= len(encoder.blocks):
            continue  # a block the (student-sized) encoder does not keep
        elif key.startswith(COORDINATE_ENCODERS) and not encoder.spec.coords:
            unused.append(key)
        else:
            unknown.append(key)
    if unknown:
        raise InputError(f"{path}: unexpected encoder tensor {_listed(unknown)} for this backbone "
                         "(is teacher.backbone the model this checkpoint was saved from?)")
    wrong = [f"{k} {tuple(v.shape)} != {tuple(own[k].shape)}" for k, v in kept.items() if v.shape != own[k].shape]
    if wrong:
        raise InputError(f"{path}: checkpoint does not fit backbone: {_listed(wrong)}")
    missing = [k for k in own if k not in kept]
    if missing:
        raise InputError(f"{path}: checkpoint lacks {_listed(missing)}")
    encoder.load_state_dict(kept)
    return Loaded(sorted(kept), sorted(unused))

"""Our encoder against the official Prithvi-EO implementation (terratorch's prithvi_mae.py,
see tests/reference.py), on the same random weights saved in the published checkpoint
layouts and loaded through the teacher stage's own path: the same tokens after every block."""

import logging
from functools import partial

import numpy as np
import pytest
import torch

from instageo.model import backbone as ours
from instageo.recipe.backbones import BACKBONES
from instageo.model.teacher import initial_model
from tests.reference import prithvi_configs, prithvi_mae

TOLERANCE = 1e-5
BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]
LOG = logging.getLogger("test")


def test_registry_means_what_terratorch_means_by_each_name():
    official = prithvi_configs()
    assert set(BACKBONES) - set(official) == {"instageo_ci"}  # our only name of our own
    for name, spec in BACKBONES.items():
        if name not in official:
            continue
        config = official[name]
        patch = config["patch_size"]
        assert (spec.embed_dim, spec.depth, spec.num_heads, spec.patch_size, spec.tubelet_size) == (
            config["embed_dim"], config["depth"], config["num_heads"], patch[1], patch[0]), name
        assert spec.coords == bool(config["coords_encoding"]) == config["coords_scale_learn"], name
        # terratorch rounds EO-1.0's statistics to whole DN; ours are the model card's
        assert np.allclose(np.array(spec.mean) * 10000, config["mean"], atol=0.5), name
        assert np.allclose(np.array(spec.std) * 10000, config["std"], atol=0.5), name


def official_model(name: str, frames: int):
    """The official MAE (encoder + decoder) with random weights, none left at a constant."""
    config = {**prithvi_configs()[name], "num_frames": frames, "in_chans": len(BANDS), "img_size": 224}
    torch.manual_seed(0)
    model = prithvi_mae().PrithviMAE(**config)
    with torch.no_grad():  # norms start at 1 / 0 and scales at 0.1: make each one matter
        for key, value in model.named_parameters():
            if "norm" in key or key.endswith("scale"):
                value.add_(torch.randn_like(value) * 0.2)
    return model.eval()


def save_published_layout(model, path, version: str) -> None:
    """EO-1.0: one flat dict (decoder_*, mask_token beside the encoder's keys); EO-2.0: the
    MAE's own encoder. / decoder. prefixes."""
    state = model.state_dict()
    if version == "v1":
        state = {key.split(".", 1)[1]: value for key, value in state.items()}
    torch.save(state, path)


def inputs(frames: int):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(1, len(BANDS), frames, 224, 224, generator=generator)
    temporal = torch.tensor([[[2019 + i, 30 + 95 * i] for i in range(frames)]], dtype=torch.float32)
    location = torch.tensor([[-1.2921, 36.8219]])  # lat, lon
    return x, temporal, location


def per_block(encoder, blocks, run) -> list[torch.Tensor]:
    """Output of each block (cls token dropped) while ``run()`` runs the encoder."""
    seen = []
    hooks = [block.register_forward_hook(lambda m, i, o: seen.append(o[:, 1:].detach().clone())) for block in blocks]
    try:
        final = run()
    finally:
        for hook in hooks:
            hook.remove()
    return seen + [final]


def max_differences(name: str, frames: int, version: str, tmp_path, coords: bool) -> list[float]:
    reference = official_model(name, frames)
    save_published_layout(reference, tmp_path / f"{name}.pt", version)
    meta = {"backbone": name, "in_chans": len(BANDS), "frames": frames, "outputs": 2, "head": "light",
            "depth": BACKBONES[name].depth, "bands": BANDS}
    model = initial_model(meta, tmp_path / f"{name}.pt", LOG).eval()
    x, temporal, location = inputs(frames)
    given = (temporal, location) if coords else (None, None)
    with torch.no_grad():
        theirs = per_block(reference.encoder, reference.encoder.blocks,
                           lambda: reference.encoder.forward_features(x, *given)[-1][:, 1:])
        mine = per_block(model.encoder, model.encoder.blocks,
                         lambda: model.encoder(x, temporal=given[0], location=given[1]).flatten(1, 3))
    assert len(mine) == len(theirs) == BACKBONES[name].depth + 1
    return [float((a - b).abs().max()) for a, b in zip(mine, theirs)]


@pytest.mark.parametrize("name, frames, version, coords", [
    ("prithvi_eo_v1_100", 3, "v1", False),
    ("prithvi_eo_v2_300", 2, "v2", False),
    ("prithvi_eo_v2_tiny_tl", 1, "v2", True),
    ("prithvi_eo_v2_100_tl", 2, "v2", True),
])
def test_tokens_match_the_official_encoder_at_every_block(name, frames, version, coords, tmp_path):
    differences = max_differences(name, frames, version, tmp_path, coords)
    assert max(differences) <= TOLERANCE, f"per block: {differences}"


def test_the_comparison_sees_a_wrong_position_order_eps_or_missing_coordinates(tmp_path, monkeypatch):
    """The parity check above can fail: each old mistake, put back, breaks it."""
    name = "prithvi_eo_v2_tiny_tl"
    assert max(max_differences(name, 2, "v2", tmp_path, coords=True)) <= TOLERANCE

    real = ours.sincos_3d

    def time_height_width(frames, height, width, dim):  # the old table's channel order
        return real(frames, height, width, dim)[:, _time_first_order(dim)]

    with monkeypatch.context() as patch:
        patch.setattr(ours, "sincos_3d", time_height_width)
        assert max(max_differences(name, 2, "v2", tmp_path, coords=True)) > 1e-2
    with monkeypatch.context() as patch:
        patch.setattr(ours, "LayerNorm", partial(torch.nn.LayerNorm, eps=1e-6))
        assert max(max_differences(name, 2, "v2", tmp_path, coords=True)) > TOLERANCE

    # a TL checkpoint used without its coordinates is a different model
    reference = official_model(name, 1)
    x, temporal, location = inputs(1)
    with torch.no_grad():
        with_coords = reference.encoder.forward_features(x, temporal, location)[-1]
        without = reference.encoder.forward_features(x)[-1]
    assert float((with_coords - without).abs().max()) > 1e-2


def _time_first_order(dim: int) -> list[int]:
    """Channel permutation turning width | height | time into time | height | width."""
    space, time = dim // 16 * 6, dim // 16 * 4
    return list(range(2 * space, 2 * space + time)) + list(range(space, 2 * space)) + list(range(space))


def test_position_tables_equal_the_official_ones_for_every_grid():
    official = prithvi_mae().get_3d_sincos_pos_embed
    for dim, grid in ((64, (2, 3, 4)), (768, (3, 14, 14)), (1280, (1, 16, 16)), (1024, (4, 8, 5))):
        expected = torch.from_numpy(official(dim, grid)).float()
        assert torch.equal(ours.sincos_3d(*grid, dim), expected), (dim, grid)


def test_the_600m_models_have_the_official_tensors(tmp_path):
    """Too big to run in CI: built on the meta device, the same tensor names and shapes."""
    for name in ("prithvi_eo_v2_600", "prithvi_eo_v2_600_tl"):
        config = {**prithvi_configs()[name], "num_frames": 1, "in_chans": len(BANDS), "img_size": 224}
        with torch.device("meta"):
            theirs = prithvi_mae().PrithviViT(**config).state_dict()
            mine = ours.PrithviEncoder(BACKBONES[name], len(BANDS)).state_dict()
        shapes = {k: tuple(v.shape) for k, v in theirs.items() if k != "pos_embed"}
        assert shapes == {k: tuple(v.shape) for k, v in mine.items()}, name


def test_layer_norm_eps_does_not_depend_on_timm():
    encoder = ours.PrithviEncoder(BACKBONES["instageo_ci"], 6)
    norms = [m for m in encoder.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 * len(encoder.blocks) + 1 and {m.eps for m in norms} == {1e-5}

"""Backbones, heads, students and Prithvi checkpoint loading (small fake checkpoints made
here in the published key layouts)."""

import pytest
import torch

from instageo.errors import InputError
from instageo.model.backbone import BACKBONES, PrithviEncoder, backbone_spec, sincos_3d
from instageo.model.checkpoint import load_encoder
from instageo.model.network import PixelModel, count_parameters, cut_student

SPEC = BACKBONES["instageo_ci"]


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_registry_specs_build_and_count(name):
    spec = backbone_spec(name)
    if spec.embed_dim > 256:
        pytest.skip("large backbones are not built in CI")
    model = PixelModel(spec, in_chans=6, frames=3, outputs=2)
    assert count_parameters(model) > 0


@pytest.mark.parametrize("frames, size, chans", [(1, 16, 2), (3, 32, 6), (2, 24, 13)])
def test_any_bands_frames_and_size(frames, size, chans):
    model = PixelModel(SPEC, in_chans=chans, frames=frames, outputs=3, head="upsample")
    out = model(torch.randn(2, chans, frames, size, size))
    assert out.shape == (2, 3, size, size)
    light = PixelModel(SPEC, in_chans=chans, frames=frames, outputs=3, head="light")
    assert light(torch.randn(1, chans, frames, size, size)).shape == (1, 3, size, size)


def test_position_embedding_is_fixed_sincos_with_prithvi_channel_order():
    table = sincos_3d(2, 3, 4, 64)  # 24 tokens in (t, h, w) order; channels width | height | time
    assert table.shape == (24, 64)
    width, height, time = table[:, :24], table[:, 24:48], table[:, 48:]
    assert torch.equal(time[0], time[11]) and not torch.equal(time[0], time[12])  # time: last 16
    assert torch.equal(width[0], width[4]) and not torch.equal(width[0], width[1])  # width: first 24
    assert torch.equal(height[0], height[1]) and not torch.equal(height[0], height[4])


def test_student_keeps_the_first_blocks():
    teacher = PixelModel(SPEC, in_chans=6, frames=2, outputs=2)
    student = cut_student(teacher, 2)
    assert len(student.encoder.blocks) == 2
    for mine, theirs in zip(student.encoder.blocks, teacher.encoder.blocks[:2]):
        for a, b in zip(mine.state_dict().values(), theirs.state_dict().values()):
            assert torch.equal(a, b)
    assert count_parameters(student) < count_parameters(teacher)
    with pytest.raises(ValueError, match="between 1 and the teacher's 4"):
        cut_student(teacher, 5)


def fake_prithvi(layout: str, path, bands=6):
    """A small checkpoint in a published Prithvi key layout, with its decoder and extras."""
    source = PrithviEncoder(SPEC, in_chans=bands)
    state = {k: v.clone() for k, v in source.state_dict().items()}
    state["pos_embed"] = torch.zeros(1, 17, SPEC.embed_dim)
    extras = {"mask_token": torch.zeros(1, 1, 32), "decoder_embed.weight": torch.zeros(32, SPEC.embed_dim),
              "decoder_blocks.0.norm1.weight": torch.ones(32)}
    if layout == "v1":
        checkpoint = {**state, **extras}
    else:
        checkpoint = {"model": {**{f"encoder.{k}": v for k, v in state.items()},
                                **{f"decoder.{k}": v for k, v in extras.items()}}}
    torch.save(checkpoint, path)
    return state


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_prithvi_checkpoints_load_by_their_own_key_names(layout, tmp_path):
    state = fake_prithvi(layout, tmp_path / "ckpt.pt")
    encoder = PrithviEncoder(SPEC, in_chans=6, depth=2)  # a student-sized encoder
    kept = load_encoder(encoder, tmp_path / "ckpt.pt", list(SPEC.bands)).kept
    assert "pos_embed" not in kept and not any(k.startswith(("decoder", "mask")) for k in kept)
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_bands_are_remapped_and_new_bands_start_from_the_mean(tmp_path):
    state = fake_prithvi("v1", tmp_path / "ckpt.pt")
    encoder = PrithviEncoder(SPEC, in_chans=3)
    load_encoder(encoder, tmp_path / "ckpt.pt", ["nir", "red", "vv"])
    kernel, original = encoder.patch_embed.proj.weight, state["patch_embed.proj.weight"]
    assert torch.equal(kernel[:, 0], original[:, 3]) and torch.equal(kernel[:, 1], original[:, 2])
    assert torch.allclose(kernel[:, 2], original.mean(dim=1))


def test_bad_checkpoints_are_named(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="junk.pt: not a readable PyTorch checkpoint"):
        load_encoder(PrithviEncoder(SPEC, 6), tmp_path / "junk.pt", list(SPEC.bands))
    fake_prithvi("v1", tmp_path / "small.pt")
    wide = PrithviEncoder(backbone_spec("prithvi_eo_tiny"), 6, depth=1)
    with pytest.raises(InputError, match="small.pt: checkpoint does not fit backbone"):
        load_encoder(wide, tmp_path / "small.pt", list(SPEC.bands))


def test_unknown_encoder_tensors_are_an_error_naming_them(tmp_path):
    state = fake_prithvi("v2", tmp_path / "ckpt.pt")
    checkpoint = torch.load(tmp_path / "ckpt.pt")
    checkpoint["model"]["encoder.blocks.0.attn.rel_pos"] = torch.zeros(3)
    torch.save(checkpoint, tmp_path / "extra.pt")
    with pytest.raises(InputError, match=r"extra.pt: unexpected encoder tensor blocks.0.attn.rel_pos"):
        load_encoder(PrithviEncoder(SPEC, 6), tmp_path / "extra.pt", list(SPEC.bands))
    assert state  # the plain checkpoint loads (above); only the extra tensor is refused


def test_tl_encoders_load_into_tl_backbones_and_are_named_when_unused(tmp_path):
    import dataclasses

    tl = dataclasses.replace(SPEC, coords=True)
    source = PrithviEncoder(tl, 6)
    with torch.no_grad():
        source.temporal_embed_enc.scale.fill_(0.7)
        source.location_embed_enc.scale.fill_(0.3)
    torch.save({f"encoder.{k}": v for k, v in source.state_dict().items()}, tmp_path / "tl.pt")
    target = PrithviEncoder(tl, 6)
    load_encoder(target, tmp_path / "tl.pt", list(SPEC.bands))
    assert target.temporal_embed_enc.scale.item() == pytest.approx(0.7)
    assert target.location_embed_enc.scale.item() == pytest.approx(0.3)
    loaded = load_encoder(PrithviEncoder(SPEC, 6), tmp_path / "tl.pt", list(SPEC.bands))
    assert loaded.unused == ["location_embed_enc.scale", "temporal_embed_enc.scale"]
    fake_prithvi("v2", tmp_path / "plain.pt")
    with pytest.raises(InputError, match="plain.pt: checkpoint lacks temporal_embed_enc.scale"):
        load_encoder(PrithviEncoder(tl, 6), tmp_path / "plain.pt", list(SPEC.bands))


def test_tl_coordinates_change_the_tokens_and_others_ignore_them():
    import dataclasses

    x = torch.randn(2, 6, 2, 16, 16)
    temporal = torch.tensor([[[2020.0, 10.0], [2020.0, 40.0]]] * 2)
    location = torch.tensor([[10.0, 20.0], [-30.0, 120.0]])
    tl = PrithviEncoder(dataclasses.replace(SPEC, coords=True), 6).eval()
    with torch.no_grad():
        plain = tl(x)
        placed = tl(x, temporal=temporal, location=location)
    assert not torch.allclose(plain, placed)
    encoder = PrithviEncoder(SPEC, 6).eval()
    with torch.no_grad():
        assert torch.equal(encoder(x), encoder(x, temporal=temporal, location=location))

"""The encoder as a component: timm's forward_intermediates, explicit position-table kinds, resizing."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitmae.model import MaskedAutoencoder, ModelConfig, ViTClassifier, ViTEncoder, sincos_pos_embed
from vitmae.model.flat_names import flat_state_dict, load_flat_state_dict
from vitmae.model.grid import resize_pos_embed

CONFIG = ModelConfig(img_size=(32, 32), patch_size=8, in_chans=3, embed_dim=64, depth=4, num_heads=4,
                     decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


def trained_encoder(config: ModelConfig = CONFIG) -> ViTEncoder:
    """An encoder whose every tensor is off its initial value (norms and biases included)."""
    torch.manual_seed(0)
    encoder = ViTEncoder(config)
    with torch.no_grad():
        for p in encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return encoder.eval()


def timm_twin(encoder: ViTEncoder, img_size: tuple[int, int], state: dict | None = None) -> VisionTransformer:
    c = encoder.config
    vit = VisionTransformer(img_size=img_size, patch_size=c.patch_size, in_chans=c.in_chans, embed_dim=c.embed_dim,
                            depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio, qkv_bias=c.qkv_bias,
                            class_token=True, global_pool="token", fc_norm=False, num_classes=0,
                            norm_layer=partial(nn.LayerNorm, eps=c.norm_eps))
    vit.load_state_dict(state or encoder.state_dict(), strict=True)
    return vit.eval()


def assert_same(ours, theirs):
    if isinstance(ours, tuple):
        for a, b in zip(ours, theirs, strict=True):
            assert_same(a, b)
        return
    assert ours.shape == theirs.shape
    assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5), (ours - theirs).abs().max()


@pytest.mark.parametrize("kwargs", [
    dict(indices=2), dict(indices=[0, 2]), dict(indices=[-1], norm=True), dict(indices=None, output_fmt="NLC"),
    dict(indices=3, return_prefix_tokens=True), dict(indices=[1], intermediates_only=True),
    dict(indices=[0, 3], norm=True, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True),
])
def test_forward_intermediates_equals_timms_on_the_same_weights(kwargs):
    encoder = trained_encoder()
    vit = timm_twin(encoder, CONFIG.img_size)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ours, theirs = encoder.forward_intermediates(x, **kwargs), vit.forward_intermediates(x, **kwargs)
    if not kwargs.get("intermediates_only"):
        assert_same(ours[0], theirs[0])
        ours, theirs = ours[1], theirs[1]
    assert len(ours) == len(theirs) == len(encoder.take_indices(kwargs["indices"]))
    for a, b in zip(ours, theirs):
        assert_same(a, b)
    if kwargs.get("output_fmt", "NCHW") == "NCHW":
        patches = ours[0][0] if kwargs.get("return_prefix_tokens") else ours[0]
        assert patches.shape == (2, 64, 4, 4)


def test_forward_intermediates_at_a_non_square_size_follows_the_official_bicubic_convention():
    """pos_embed_resize="interpolate": the table is resampled bicubically as the official fine-tuning code
    does (align_corners=False, no antialiasing) = timm's resample_abs_pos_embed(antialias=False). timm's
    default (antialias=True) differs from it by a fraction of a percent of the table."""
    encoder = trained_encoder(CONFIG.replace(pos_embed_resize="interpolate"))
    size, grid = (40, 24), (5, 3)
    state = encoder.state_dict()
    state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], list(grid), [4, 4], num_prefix_tokens=1,
                                                antialias=False)
    vit = timm_twin(encoder, size, state)
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        final, ours = encoder.forward_intermediates(x, indices=[1, 3])
        ref_final, theirs = vit.forward_intermediates(x, indices=[1, 3])
    assert_same(final, ref_final)
    for a, b in zip(ours, theirs):
        assert a.shape == (2, 64, 5, 3)
        assert_same(a, b)
    antialiased = resample_abs_pos_embed(encoder.pos_embed, list(grid), [4, 4], num_prefix_tokens=1)
    table = encoder.pos_embed_for(grid)
    relative = ((antialiased - table).norm() / table.norm()).item()
    assert 0 < relative < 0.05


def test_sincos_tables_are_recomputed_by_default_and_interpolated_on_request():
    grid = (6, 2)
    recompute = ViTEncoder(CONFIG)
    assert recompute.pos_embed_kind == "sincos"
    assert torch.equal(recompute.pos_embed_for(grid)[0], sincos_pos_embed(64, grid))
    interpolate = ViTEncoder(CONFIG.replace(pos_embed_resize="interpolate"))
    assert torch.equal(interpolate.pos_embed_for(grid), resize_pos_embed(interpolate.pos_embed, (4, 4), grid))
    assert not torch.allclose(interpolate.pos_embed_for(grid), recompute.pos_embed_for(grid))


def test_a_frozen_fine_tuned_encoder_interpolates_its_own_learned_table():
    """Freezing a fine-tuned encoder (e.g. for a linear probe) used to make its learned table look fixed,
    so a new resolution silently recomputed a sin-cos table instead of interpolating the learned one."""
    classifier = ViTClassifier(CONFIG, num_classes=3)
    with torch.no_grad():
        classifier.encoder.pos_embed.add_(torch.randn_like(classifier.encoder.pos_embed))
    encoder = classifier.encoder
    for p in encoder.parameters():
        p.requires_grad_(False)
    assert encoder.pos_embed_kind == "learned"
    grid = (6, 6)
    expected = resize_pos_embed(encoder.pos_embed, (4, 4), grid)
    assert torch.equal(encoder.pos_embed_for(grid), expected)
    assert not torch.allclose(encoder.pos_embed_for(grid)[0], sincos_pos_embed(64, grid), atol=1e-2)


def test_models_hold_the_encoder_and_keep_the_flat_key_names():
    """Module paths inside the process (what torch.distributed.checkpoint addresses), flat names through
    the adapter (what files hold)."""
    mae = MaskedAutoencoder(CONFIG)
    assert isinstance(mae.encoder, ViTEncoder)
    assert "encoder.blocks.0.attn.qkv.weight" in mae.state_dict()
    assert "decoder.decoder_blocks.0.mlp.fc1.weight" in mae.state_dict()
    keys = list(flat_state_dict(mae))
    assert "blocks.0.attn.qkv.weight" in keys and "decoder_blocks.0.mlp.fc1.weight" in keys
    assert not any(k.startswith(("encoder.", "decoder.")) for k in keys)
    clone = MaskedAutoencoder(CONFIG)
    load_flat_state_dict(clone, flat_state_dict(mae))  # strict, with the flat names
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(clone.encode(x), mae.encode(x))
    assert torch.equal(mae.encode(x), mae.encoder.forward_intermediates(x, indices=1)[0])

"""The video MAE (VideoMAE, MAE-ST) on the same encoder and blocks: tokens, tables, masking, target,
classifier, other frame counts and resolutions. Expected values are computed here from the papers' and
REFERENCE.md's definitions, not from vitmae's helpers."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitmae.config import ModelConfig, model_config
from vitmae.errors import ConfigError
from vitmae.model import MaskedAutoencoder, ViTClassifier, create_model, from_pretrained_encoder
from vitmae.model.flat_names import flat_state_dict
from vitmae.model.masking import make_noise, mask_from_noise, masking_from_mask, noise_from_mask, num_kept_for
from tests.model.checkpointing import assert_checkpointing_keeps_the_gradients

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def video_config(**overrides) -> ModelConfig:
    """4 frames of 16 x 24 px in 2 x 8 x 8 tubelets: a (2, 2, 3) grid of 12 tokens."""
    base = dict(num_frames=4, tubelet_size=2, img_size=(16, 24), patch_size=8, in_chans=3, embed_dim=32, depth=2,
                num_heads=2, decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2, mask_ratio=0.5)
    return ModelConfig(**{**base, **overrides})


def clips(config: ModelConfig, n: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, config.in_chans, *config.input_size, generator=torch.Generator().manual_seed(seed))


def sinusoid_table(length: int, dim: int) -> torch.Tensor:
    """REFERENCE: angle = pos / 10000^(2 * (j // 2) / d), sin on even channels, cos on odd, float64."""
    angles = np.array([[pos / np.power(10000, 2 * (j // 2) / dim) for j in range(dim)] for pos in range(length)])
    angles[:, 0::2], angles[:, 1::2] = np.sin(angles[:, 0::2]), np.cos(angles[:, 1::2])
    return torch.tensor(angles, dtype=torch.float32)


# -- shape -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, visible_tube, visible_random", [("videomae_vit_base_patch16", 160, 156)])
def test_a_videomae_clip_has_1568_tokens_and_keeps_a_tenth(name, visible_tube, visible_random):
    config = model_config(name)
    assert config.grid_size == (8, 14, 14) and config.num_patches == 1568 and config.mask_ratio == 0.9
    for mask_type, visible in (("tube", visible_tube), ("random", visible_random)):
        noise = make_noise(mask_type, 2, config.grid_size, 0.9)
        assert config.patching.values(3) == 1536  # 2 x 16 x 16 x 3 values per token
        assert num_kept_for(mask_type, config.grid_size, 0.9) == visible
        assert mask_from_noise(noise, 0.9, visible).ids_keep.shape == (2, visible)


@pytest.mark.parametrize("name, width, depth, heads", [
    ("videomae_vit_small_patch16", 192, 4, 3), ("videomae_vit_base_patch16", 384, 4, 6),
    ("videomae_vit_large_patch16", 512, 12, 8), ("videomae_vit_huge_patch16", 640, 12, 8)])
def test_presets_carry_the_official_decoders(name, width, depth, heads):
    config = model_config(name)
    assert (config.decoder_embed_dim, config.decoder_depth, config.decoder_num_heads) == (width, depth, heads)
    assert (config.num_frames, config.tubelet_size, config.img_size) == (16, 2, (224, 224))


def test_the_cpu_preset_has_128_tokens():
    config = model_config("videomae_vit_micro_patch8_32")
    assert config.grid_size == (8, 4, 4) and config.in_chans == 1


def test_videomaes_shape_no_cls_qv_biases_and_a_bias_free_projection():
    model = MaskedAutoencoder(video_config())
    names = flat_state_dict(model)
    assert "cls_token" not in names and "pos_embed" not in names and "decoder_pos_embed" not in names
    assert names["patch_embed.proj.weight"].shape == (32, 3, 2, 8, 8)  # Conv3d (D, C, t, p, p)
    assert {"blocks.0.attn.q_bias", "blocks.0.attn.v_bias", "decoder_blocks.0.attn.q_bias"} <= set(names)
    assert "blocks.0.attn.qkv.bias" not in names and "decoder_embed.bias" not in names
    assert model.decoder.decoder_pred.out_features == 2 * 8 * 8 * 3


def test_query_and_value_biases_without_a_key_bias():
    torch.manual_seed(0)
    block = MaskedAutoencoder(video_config()).encoder.blocks[0]
    attn = block.attn
    torch.nn.init.normal_(attn.q_bias)
    torch.nn.init.normal_(attn.v_bias)
    x = torch.randn(2, 5, 32)
    w_q, w_k, w_v = attn.qkv.weight.chunk(3)
    q, k, v = (t.reshape(2, 5, 2, 16).transpose(1, 2) for t in (x @ w_q.T + attn.q_bias, x @ w_k.T, x @ w_v.T + attn.v_bias))
    expected = (torch.softmax(q @ k.transpose(-1, -2) / 4, dim=-1) @ v).transpose(1, 2).reshape(2, 5, 32)
    assert torch.allclose(attn(x), attn.proj(expected), atol=1e-6)


def test_the_position_table_is_videomaes_interleaved_sinusoid_and_not_stored():
    model = MaskedAutoencoder(video_config())
    assert torch.equal(model.encoder.pos_embed_for((2, 2, 3))[0], sinusoid_table(12, 32))
    assert torch.equal(model.decoder.position_table_for((2, 2, 3))[0], sinusoid_table(12, 16))
    assert "pos_embed" not in model.encoder.state_dict()
    assert not any(p.shape[-2:] == (12, 32) for p in model.parameters())


def test_a_video_config_refuses_what_gives_no_tubelet_and_an_image_config_refuses_video_options():
    with pytest.raises(ConfigError, match="num_frames 5 is not a positive multiple of tubelet_size 2"):
        video_config(num_frames=5)
    with pytest.raises(ConfigError, match="video options"):
        ModelConfig(mask_type="tube")
    with pytest.raises(ConfigError, match="pos_embed_type must be one of"):
        video_config(pos_embed_type="learned")
    image = ModelConfig()
    assert image.cls_token and image.k_bias and "num_frames" not in image.to_dict()


def test_a_video_config_round_trips_through_its_dict():
    config = video_config(pos_embed_type="separable", mask_type="random", pixel_target="videomae")
    assert ModelConfig.from_dict(config.to_dict()) == config


# -- masking -----------------------------------------------------------------------------------------

def test_tube_masking_removes_the_same_positions_in_every_time_slice():
    config = video_config(num_frames=8, img_size=32)  # grid (4, 4, 4)
    model = MaskedAutoencoder(config).eval()
    out = model(clips(config), mask_ratio=0.75)
    per_slice = out.mask.reshape(2, 4, 16)
    assert torch.equal(per_slice, per_slice[:, :1].expand(-1, 4, -1))
    assert torch.equal(per_slice.sum(-1), torch.full((2, 4), 12.0))  # int(0.75 * 16) per slice


def test_random_masking_is_mae_sts_any_tokens():
    config = video_config(num_frames=8, img_size=32, mask_type="random")
    model = MaskedAutoencoder(config).eval()
    torch.manual_seed(3)
    out = model(clips(config), mask_ratio=0.75)
    per_slice = out.mask.reshape(2, 4, 16)
    assert out.mask.sum(1).tolist() == [48.0, 48.0]
    assert not torch.equal(per_slice, per_slice[:, :1].expand(-1, 4, -1))


def test_noise_reproduces_a_given_tube_mask_exactly():
    """REFERENCE: noise = mask + 0.5 * rand keeps exactly the visible tokens of a mask made with the same
    count; `mask=` takes any count."""
    config = video_config()
    model = MaskedAutoencoder(config).eval()
    # 4 of the 6 positions of a slice removed; tube masking at the config's 0.5 removes int(0.5 * 6) = 3,
    # so only `mask=` reproduces this one
    mask = torch.tensor([[1, 0, 1, 0, 1, 1], [0, 1, 1, 1, 0, 1]], dtype=torch.bool).repeat(1, 2)
    x = clips(config)
    with torch.no_grad():
        by_noise = model(x, noise=noise_from_mask(mask))
        by_mask = model(x, mask=mask)
    assert not torch.equal(by_noise.mask, mask.float())
    assert torch.equal(by_mask.mask, mask.float())
    three = torch.tensor([[1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 0, 1]], dtype=torch.bool).repeat(1, 2)
    with torch.no_grad():
        a, b = model(x, noise=noise_from_mask(three)), model(x, mask=three)
    assert torch.equal(a.mask, three.float()) and torch.equal(b.mask, three.float())
    assert torch.allclose(a.loss, b.loss, atol=1e-6) and torch.allclose(a.pred, b.pred, atol=1e-6)


def test_a_mask_must_remove_as_many_tokens_in_every_sample():
    with pytest.raises(ValueError, match="as many tokens in every sample"):
        masking_from_mask(torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool))
    masking = masking_from_mask(torch.tensor([[0, 1, 0, 1]], dtype=torch.bool))
    assert masking.ids_keep.tolist() == [[0, 2]]  # visible tokens in token order


# -- target and loss ---------------------------------------------------------------------------------

def videomae_target(x: torch.Tensor, t: int, p: int, norm: bool, unnormalise: bool) -> torch.Tensor:
    """REFERENCE's target, from (B, T, C, H, W): un-normalise with ImageNet's statistics, order values
    (time, row, column, channel), normalise each patch per channel with the unbiased std + 1e-6."""
    b, time, c, h, w = x.shape
    if unnormalise:
        x = x * torch.tensor(IMAGENET_STD).view(1, 1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 1, 3, 1, 1)
    x = x.reshape(b, time // t, t, c, h // p, p, w // p, p).permute(0, 1, 4, 6, 2, 5, 7, 3)
    x = x.reshape(b, -1, t * p * p, c)
    if norm:
        x = (x - x.mean(dim=-2, keepdim=True)) / (x.var(dim=-2, unbiased=True, keepdim=True).sqrt() + 1e-6)
    return x.reshape(b, x.shape[1], -1)


@pytest.mark.parametrize("chans, norm", [(3, True), (3, False), (1, True)])
def test_videomae_target_and_loss(chans, norm):
    config = video_config(in_chans=chans, pixel_target="videomae", norm_pix_loss=norm)
    model = MaskedAutoencoder(config).eval()
    x = clips(config)
    expected = videomae_target(x.transpose(1, 2), 2, 8, norm, unnormalise=chans == 3)
    assert torch.allclose(model.target(x), expected, atol=1e-6)
    mask = torch.tensor([[1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]], dtype=torch.bool).repeat(1, 2)
    with torch.no_grad():
        out = model(x, mask=mask)
    masked_pred, masked_target = out.pred[mask].reshape(2, 6, -1), expected[mask].reshape(2, 6, -1)
    assert torch.allclose(out.loss, F.mse_loss(masked_pred, masked_target), atol=1e-6)


def test_the_recorded_normalisation_is_what_the_target_undoes():
    config = video_config(pixel_target="videomae", norm_pix_loss=False, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    model = MaskedAutoencoder(config)
    x = clips(config)
    assert torch.allclose(model.target(x), model.patchify(x * 0.25 + 0.5), atol=1e-6)


def test_the_image_target_is_the_default():
    config = video_config()
    model = MaskedAutoencoder(config)
    x = clips(config)
    target = model.patchify(x)
    expected = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    assert config.pixel_target == "mae" and torch.allclose(model.target(x), expected, atol=1e-6)


# -- features and other sizes ------------------------------------------------------------------------

def test_forward_intermediates_gives_time_row_column_maps():
    config = video_config()
    model = MaskedAutoencoder(config).eval()
    x = clips(config)
    final, maps = model.encoder.forward_intermediates(x, indices=2)
    assert [m.shape for m in maps] == [(2, 32, 2, 2, 3)] * 2
    tokens = model.encoder.forward_intermediates(x, indices=[1], output_fmt="NLC", norm=True, intermediates_only=True)
    assert torch.allclose(tokens[0], final, atol=1e-6) and final.shape == (2, 12, 32)
    assert torch.equal(maps[1].flatten(2).transpose(1, 2), model.encoder.forward_intermediates(
        x, indices=[1], output_fmt="NLC", intermediates_only=True)[0])


def test_another_frame_count_and_resolution_recompute_the_sinusoid():
    config = video_config()
    model = MaskedAutoencoder(config).eval()
    x = clips(video_config(num_frames=8, img_size=32))  # grid (4, 4, 4)
    out = model(x)
    assert out.pred.shape == (2, 64, 384)
    assert torch.equal(model.encoder.pos_embed_for((4, 4, 4))[0], sinusoid_table(64, 32))
    bigger = MaskedAutoencoder(video_config(num_frames=8, img_size=32))
    bigger.load_state_dict(model.state_dict())
    noise = torch.rand(2, 64)
    with torch.no_grad():
        assert torch.equal(model(x, noise=noise).pred, bigger.eval()(x, noise=noise).pred)


def test_an_interpolated_sinusoid_resamples_space_bicubically_and_time_linearly():
    model = MaskedAutoencoder(video_config(pos_embed_resize="interpolate"))
    table = sinusoid_table(12, 32).reshape(2, 2, 3, 32).permute(3, 0, 1, 2)  # (D, T, H, W)
    space = F.interpolate(table.transpose(0, 1), size=(4, 6), mode="bicubic", align_corners=False)  # (T, D, H, W)
    time = F.interpolate(space.permute(1, 2, 3, 0).reshape(1, -1, 2), size=4, mode="linear", align_corners=False)
    expected = time.reshape(32, 4, 6, 4).permute(3, 1, 2, 0).reshape(-1, 32)
    assert torch.allclose(model.encoder.pos_embed_for((4, 4, 6))[0], expected, atol=1e-6)


def test_mae_st_separable_tables_are_learned_and_interpolated():
    torch.manual_seed(0)
    config = video_config(pos_embed_type="separable", cls_token=True)
    model = MaskedAutoencoder(config)
    enc = model.encoder
    names = set(flat_state_dict(model))
    assert {"pos_embed_spatial", "pos_embed_temporal", "pos_embed_class", "decoder_pos_embed_spatial"} <= names
    assert enc.pos_embed_spatial.shape == (1, 6, 32) and enc.pos_embed_temporal.shape == (1, 2, 32)
    assert enc.pos_embed_spatial.requires_grad and enc.pos_embed_kind == "learned"
    table = enc.pos_embed_for((2, 2, 3))[0]
    expected = (enc.pos_embed_temporal[0][:, None] + enc.pos_embed_spatial[0][None]).reshape(12, 32)
    assert torch.equal(table[0], enc.pos_embed_class[0, 0]) and torch.allclose(table[1:], expected)
    resized = enc.pos_embed_for((3, 4, 6))[0, 1:].reshape(3, 24, 32)
    space = F.interpolate(enc.pos_embed_spatial.reshape(1, 2, 3, 32).permute(0, 3, 1, 2), size=(4, 6),
                          mode="bicubic", align_corners=False).permute(0, 2, 3, 1).reshape(24, 32)
    time = F.interpolate(enc.pos_embed_temporal.transpose(1, 2), size=3, mode="linear",
                         align_corners=False)[0].T
    assert torch.allclose(resized, time[:, None] + space[None], atol=1e-6)
    out = model(clips(video_config(num_frames=6, img_size=(32, 48))))
    assert out.pred.shape == (2, 72, 384)
    tables = enc.stored_tables_for((3, 4, 6))
    assert tables["pos_embed_spatial"].shape == (1, 24, 32) and tables["pos_embed_temporal"].shape == (1, 3, 32)


def test_grad_checkpointing_of_a_video_mae_and_classifier_keeps_the_gradients():
    torch.manual_seed(0)
    config = video_config()
    x, mask = clips(config), torch.tensor([[1, 0, 1, 0, 1, 0]] * 2, dtype=torch.bool).repeat(1, 2)
    model = MaskedAutoencoder(config)
    assert_checkpointing_keeps_the_gradients(model, lambda m: m(x, mask=mask).loss)
    classifier = ViTClassifier(config, 5, drop_path_rate=0.1)
    assert_checkpointing_keeps_the_gradients(classifier, lambda m: m(x).logsumexp(-1).sum())


# -- classifier --------------------------------------------------------------------------------------

def test_a_video_classifier_averages_every_token_then_fc_norm():
    torch.manual_seed(0)
    config = video_config(fc_norm_eps=1e-5)
    model = ViTClassifier(config, 7).eval()
    x = clips(config)
    tokens = model.encoder.encode(x)
    assert tokens.shape == (2, 12, 32)  # no cls token; no final norm with mean pooling
    pooled = F.layer_norm(tokens.mean(1), (32,), model.fc_norm.weight, model.fc_norm.bias, eps=1e-5)
    assert torch.allclose(model(x), model.head(pooled), atol=1e-6)
    assert model.fc_norm.eps == 1e-5


def test_token_pooling_reads_the_first_patch_token_after_the_norm():
    torch.manual_seed(0)
    config = video_config()
    model = ViTClassifier(config, 7, global_pool="token").eval()
    x = clips(config)
    tokens = model.encoder.encode(x)
    assert torch.allclose(model(x), model.head(tokens[:, 0]), atol=1e-6)
    assert isinstance(model.encoder.norm, torch.nn.LayerNorm)


def test_a_video_classifier_from_a_pretrained_mae_and_its_layer_decay():
    torch.manual_seed(0)
    mae = create_model("videomae_vit_micro_patch8_32", depth=2)
    model = from_pretrained_encoder(mae, 4, drop_path_rate=0.1)
    assert torch.equal(model.encoder.blocks[1].attn.q_bias, mae.encoder.blocks[1].attn.q_bias)
    assert model.layer_id("patch_embed.proj.weight") == 0 and model.layer_id("blocks.1.attn.q_bias") == 2
    assert model.layer_id("fc_norm.weight") == 3 and model.no_weight_decay() == {"cls_token"}
    groups = model.param_groups(0.05, layer_decay=0.75)
    scales = {g["lr_scale"] for g in groups}
    assert scales == {0.75 ** 3, 0.75 ** 2, 0.75, 1.0}
    decayed = {id(p) for g in groups if g["weight_decay"] for p in g["params"]}
    assert id(model.encoder.blocks[0].attn.q_bias) not in decayed  # 1-D: no decay
    x = torch.randn(2, 1, 16, 32, 32)
    assert model(x).shape == (2, 4) and math.isfinite(float(model(x).detach().sum()))


def test_a_frozen_probe_on_a_video_encoder_averages_every_token():
    from vitmae.model.probe import FrozenEncoderProbe, LinearProbe

    torch.manual_seed(0)
    config = video_config()
    encoder = MaskedAutoencoder(config).encoder
    probe = LinearProbe(32, 3, config).eval()
    model = FrozenEncoderProbe(encoder, probe, "mean").eval()
    x = clips(config)
    with torch.no_grad():
        assert torch.allclose(model(x), probe(encoder.encode(x).mean(1)), atol=1e-6)

"""Official MAE files (full, encoder-only, training checkpoints), shape inference, overrides, key checks,
position tables."""
from __future__ import annotations

import argparse

import pytest
import torch

from vitmae.interop import CheckpointError, MissingDecoderWarning, describe, detect_format, load_pretrained
from vitmae.model import MaskedAutoencoder, sincos_pos_embed
from vitmae.model.flat_names import flat_state_dict
from vitmae.model.grid import resize_pos_embed

from .conftest import TINY, TINY_HEADS, assert_close_rel, assert_same_mae, caught, encoder_state, images

SHAPE_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "mlp_ratio", "qkv_bias",
                "decoder_embed_dim", "decoder_depth", "decoder_mlp_ratio")


def save_official(path, state, **extra):
    torch.save({"model": state, **extra}, path)
    return path


def test_full_file_loads_exactly(tmp_path, tiny_model):
    path = save_official(tmp_path / "mae_visualize.pth", flat_state_dict(tiny_model))
    assert detect_format(path) == "official"
    model, warned = caught(Warning, load_pretrained, path, **TINY_HEADS)
    assert not warned
    assert model.config == TINY  # shapes from the weights, heads given
    assert_same_mae(tiny_model, model)


def test_encoder_only_file_warns_once_and_encodes_the_same(tmp_path, tiny_model):
    path = save_official(tmp_path / "mae_pretrain_vit.pth", encoder_state(tiny_model))
    model, warned = caught(MissingDecoderWarning, load_pretrained, path, num_heads=2)  # decoder: the standard one
    assert len(warned) == 1
    assert "decoder" in str(warned[0].message) and "fresh" in str(warned[0].message)
    x = images(TINY)
    with torch.no_grad():
        assert torch.allclose(model.encode(x), tiny_model.encode(x), atol=1e-6)
    info = describe(path, num_heads=2)
    assert info["decoder_present"] is False and info["parameters"]["decoder"] == 0
    assert info["parameters"]["encoder"] == sum(v.numel() for v in encoder_state(tiny_model).values())


def test_training_checkpoint_with_args_optimizer_and_scaler(tmp_path):
    torch.manual_seed(0)
    source = MaskedAutoencoder(TINY.replace(norm_pix_loss=False, mask_ratio=0.6))
    optimizer = torch.optim.AdamW(source.parameters(), lr=1e-3, betas=(0.9, 0.95))
    source(images(TINY)).loss.backward()
    optimizer.step()
    args = argparse.Namespace(model="mae_vit_large_patch16", input_size=32, mask_ratio=0.6, norm_pix_loss=False,
                              batch_size=64, epochs=800, blr=1.5e-4, weight_decay=0.05, device="cuda",
                              data_path="/datasets01/imagenet_full_size/061417/", output_dir="./output_dir",
                              seed=0, dist_url="env://", distributed=False)
    scaler = {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
              "_growth_tracker": 17}
    path = save_official(tmp_path / "checkpoint-20.pth", flat_state_dict(source), optimizer=optimizer.state_dict(),
                         epoch=20, scaler=scaler, args=args)
    assert detect_format(path) == "official"
    model = load_pretrained(path, **TINY_HEADS)
    assert model.config.norm_pix_loss is False and model.config.mask_ratio == 0.6
    assert_same_mae(source, model)


def test_shapes_are_inferred_without_config(tmp_path):
    config = TINY.replace(img_size=24, patch_size=4, in_chans=1, embed_dim=64, depth=3, num_heads=1, mlp_ratio=2.0,
                          qkv_bias=False, decoder_embed_dim=48, decoder_depth=1, decoder_mlp_ratio=3.0)
    source = MaskedAutoencoder(config)
    model = load_pretrained(save_official(tmp_path / "m.pth", flat_state_dict(source)), num_heads=1,
                            decoder_num_heads=16)
    assert {f: getattr(model.config, f) for f in SHAPE_FIELDS} == {f: getattr(config, f) for f in SHAPE_FIELDS}
    assert_same_mae(source, model)


def test_non_square_checkpoint_needs_its_img_size(tmp_path):
    source = MaskedAutoencoder(TINY.replace(img_size=(32, 16)))
    path = save_official(tmp_path / "m.pth", flat_state_dict(source))
    with pytest.raises(CheckpointError, match="not a square grid"):
        load_pretrained(path, **TINY_HEADS)
    assert_same_mae(source, load_pretrained(path, img_size=(32, 16), **TINY_HEADS))


def test_overrides(tmp_path, tiny_model):
    path = save_official(tmp_path / "m.pth", flat_state_dict(tiny_model))
    model = load_pretrained(path, num_heads=4, decoder_num_heads=16, norm_eps=1e-5, mask_ratio=0.5,
                            norm_pix_loss=None)
    assert (model.config.num_heads, model.config.norm_eps, model.config.mask_ratio) == (4, 1e-5, 0.5)
    with pytest.raises(CheckpointError, match=r"embed_dim=64 \(weights: 128\)"):
        load_pretrained(path, embed_dim=64, **TINY_HEADS)
    with pytest.raises(CheckpointError, match="unknown model option"):
        load_pretrained(path, width=3)
    with pytest.raises(CheckpointError, match="num_heads"):
        # 128 is not divisible by 3: still one line, still ours
        load_pretrained(path, num_heads=3, decoder_num_heads=16)


def test_unexpected_key_is_named(tmp_path, tiny_model):
    state = {**flat_state_dict(tiny_model), "blocks.0.attn.q_norm.weight": torch.ones(64)}
    with pytest.raises(CheckpointError, match=r"unexpected \(1\): blocks\.0\.attn\.q_norm\.weight"):
        load_pretrained(save_official(tmp_path / "m.pth", state), **TINY_HEADS)


def test_wrong_shape_is_named(tmp_path, tiny_model):
    state = {**flat_state_dict(tiny_model), "decoder_pred.weight": torch.zeros(100, 32)}
    with pytest.raises(CheckpointError, match=r"decoder_pred\.weight \(100, 32\) vs \(192, 32\)"):
        load_pretrained(save_official(tmp_path / "m.pth", state), **TINY_HEADS)


def test_partial_decoder_is_an_error_not_a_warning(tmp_path, tiny_model):
    dropped = ("decoder_norm.", "decoder_blocks.1.mlp")
    state = {k: v for k, v in flat_state_dict(tiny_model).items() if not k.startswith(dropped)}
    with pytest.raises(CheckpointError, match=r"missing \(6\): decoder_blocks\.1\.mlp\.fc1\.weight.*6 in all"):
        load_pretrained(save_official(tmp_path / "m.pth", state), **TINY_HEADS)


def test_position_tables_are_marked_learned_only_when_not_sincos(tmp_path, tiny_model):
    state = flat_state_dict(tiny_model)
    state["pos_embed"] = state["pos_embed"].half()  # a half-precision copy of sin-cos is still sin-cos
    state["decoder_pos_embed"] = state["decoder_pos_embed"] + 0.01 * torch.randn_like(state["decoder_pos_embed"])
    model = load_pretrained(save_official(tmp_path / "m.pth", state), **TINY_HEADS)
    assert not model.encoder.pos_embed.requires_grad
    assert model.decoder.decoder_pos_embed.requires_grad
    assert describe(tmp_path / "m.pth", **TINY_HEADS)["learned_position_tables"] == ["decoder_pos_embed"]


def test_img_size_override_resizes_tables(tmp_path, tiny_model):
    state = flat_state_dict(tiny_model)
    learned = state["decoder_pos_embed"] + 0.1 * torch.randn_like(state["decoder_pos_embed"])
    state["decoder_pos_embed"] = learned
    model = load_pretrained(save_official(tmp_path / "m.pth", state), img_size=48, **TINY_HEADS)
    assert model.config.img_size == (48, 48)
    assert not model.encoder.pos_embed.requires_grad  # sin-cos: recomputed for the 6x6 grid
    assert torch.allclose(model.encoder.pos_embed[0], sincos_pos_embed(128, (6, 6)))
    assert model.decoder.decoder_pos_embed.requires_grad  # learned: bicubic
    assert torch.allclose(model.decoder.decoder_pos_embed, resize_pos_embed(learned, (4, 4), (6, 6)))
    x = torch.randn(1, 3, 48, 48)
    with torch.no_grad():  # the encoder weights are the source's: same features as the source run at 48 px
        assert_close_rel(model.encode(x), tiny_model.encode(x))

"""transformers' VideoMAE, both directions: its directories (every layout, whole and bare) load into our
models with the same loss, masked predictions and logits to 1e-5, and our exports load into transformers
with the same numbers."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from vitmae.config import ModelConfig
from vitmae.interop import (CheckpointError, InexactExportWarning, convert, describe, export, export_classifier,
                            load_classifier, load_encoder, load_pretrained)
from vitmae.model import MaskedAutoencoder, ViTClassifier
from vitmae.model.masking import noise_from_mask

from .conftest import TINY_VIDEO, assert_close_rel, caught
from .test_hub_cache import cache, cache_model  # noqa: F401 (cache is a fixture)
from .videomae_helpers import VIDEO_CONFIGS, assert_same_pretraining, hf_clips, hf_videomae, tube_mask

transformers = pytest.importorskip("transformers")


def save_layout(hf, path, layout: str):
    """A transformers VideoMAE directory as save_pretrained writes it (the hub names: q_bias, v_bias), or
    with a raw transformers-5 state_dict() (query.bias, value.bias), as safetensors or a pickle."""
    if layout == "saved":
        hf.save_pretrained(path)
        return path
    hf.config.save_pretrained(path)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if layout == "v5_safetensors":
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    else:
        torch.save(state, path / "pytorch_model.bin")
    return path


@pytest.mark.parametrize("layout", ["saved", "v5_safetensors", "v5_bin"])
@pytest.mark.parametrize("name", list(VIDEO_CONFIGS))
def test_transformers_pretraining_loads_with_its_loss_and_predictions(tmp_path, name, layout):
    hf = hf_videomae(**VIDEO_CONFIGS[name])
    ours = load_pretrained(save_layout(hf, tmp_path, layout))
    c = hf.config
    assert ours.config.num_frames == c.num_frames and ours.config.tubelet_size == c.tubelet_size
    assert ours.config.norm_eps == 1e-12 and ours.config.decoder_norm_eps == 1e-5
    assert ours.config.pixel_target == "videomae" and ours.config.encoder_norm == (not c.use_mean_pooling)
    mask = tube_mask(hf)
    assert_same_pretraining(hf, ours, mask, mask=mask)
    # the noise trick (REFERENCE): a tube mask of the model's own count is reproduced by noise= alone
    assert_same_pretraining(hf, ours, mask, noise=noise_from_mask(mask), mask_ratio=0.5)


def test_a_random_mask_of_any_count_is_reproduced(tmp_path):
    hf = hf_videomae(**VIDEO_CONFIGS["rgb-normpix"])
    ours = load_pretrained(save_layout(hf, tmp_path, "saved"))
    g = torch.Generator().manual_seed(4)
    mask = torch.stack([torch.randperm(8, generator=g) < 3 for _ in range(2)])  # 3 of 8, any positions
    assert_same_pretraining(hf, ours, mask, mask=mask)


@pytest.mark.parametrize("name", list(VIDEO_CONFIGS))
def test_our_export_loads_into_transformers_with_the_same_numbers(tmp_path, name):
    ours = load_pretrained(save_layout(hf_videomae(**VIDEO_CONFIGS[name]), tmp_path / "in", "saved"))
    torch.manual_seed(1)
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    export(ours, tmp_path / "out", "hf")
    hf, info = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "out", output_loading_info=True)
    assert not any(info.values()), info
    mask = tube_mask(hf, seed=7)
    assert_same_pretraining(hf.eval(), ours, mask, mask=mask)
    again = load_pretrained(tmp_path / "out")
    assert again.config == ours.config


def test_a_model_of_ours_exports_and_reloads(tmp_path):
    torch.manual_seed(0)
    config = TINY_VIDEO.replace(pixel_target="videomae", decoder_norm_eps=1e-5, fc_norm_eps=1e-5, norm_eps=1e-12,
                                mask_ratio=0.75)
    ours = MaskedAutoencoder(config).eval()
    export(ours, tmp_path / "hf", "hf")
    written = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert written["architectures"] == ["VideoMAEForPreTraining"] and written["model_type"] == "videomae"
    assert written["use_mean_pooling"] is False and written["mask_ratio"] == 0.75
    processor = transformers.AutoImageProcessor.from_pretrained(tmp_path / "hf")
    assert type(processor).__name__.startswith("VideoMAEImageProcessor")
    assert processor.crop_size["height"] == 16 and list(processor.image_mean) == [0.485, 0.456, 0.406]
    hf = transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "hf").eval()
    mask = tube_mask(hf)
    assert_same_pretraining(hf, ours, mask, mask=mask)
    assert load_pretrained(tmp_path / "hf").config == config


@pytest.mark.parametrize("mean_pooling", [True, False])
def test_transformers_classifier_loads_and_exports_with_the_same_logits(tmp_path, mean_pooling):
    hf = hf_videomae("VideoMAEForVideoClassification", image_size=16, patch_size=8, num_frames=4,
                     use_mean_pooling=mean_pooling, id2label={i: f"action{i}" for i in range(5)})
    hf.save_pretrained(tmp_path / "hf")
    ours = load_classifier(tmp_path / "hf")
    assert ours.global_pool == ("avg" if mean_pooling else "token") and ours.class_names[2] == "action2"
    x = hf_clips(hf)
    with torch.no_grad():
        expected = hf(pixel_values=x).logits
        assert_close_rel(ours(x.transpose(1, 2)), expected)
    export_classifier(ours, tmp_path / "back", "hf")
    again, info = transformers.VideoMAEForVideoClassification.from_pretrained(tmp_path / "back",
                                                                              output_loading_info=True)
    assert not any(info.values()), info
    assert again.config.id2label[2] == "action2" and again.config.use_mean_pooling == mean_pooling
    processor = json.loads((tmp_path / "back" / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "VideoMAEImageProcessor"
    with torch.no_grad():
        assert_close_rel(again.eval()(pixel_values=x).logits, expected)


def test_a_pretraining_directory_gives_an_encoder_and_a_new_head(tmp_path):
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
    hf.save_pretrained(tmp_path)
    classifier = load_classifier(tmp_path, num_classes=3)
    assert isinstance(classifier, ViTClassifier) and classifier.num_classes == 3
    x = hf_clips(hf)
    with torch.no_grad():
        tokens = hf.videomae(pixel_values=x).last_hidden_state
        encoder = load_encoder(tmp_path).eval()
        assert_close_rel(encoder.encode(x.transpose(1, 2)), tokens)


def test_a_bare_videomae_model_directory_loads_its_encoder(tmp_path):
    hf = hf_videomae("VideoMAEModel", image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
    hf.save_pretrained(tmp_path)
    encoder = load_encoder(tmp_path, decoder_num_heads=2).eval()
    x = hf_clips(hf)
    with torch.no_grad():
        assert_close_rel(encoder.encode(x.transpose(1, 2)), hf(pixel_values=x).last_hidden_state)


def test_another_frame_count_and_size_on_load_equal_transformers_at_that_size(tmp_path):
    """VideoMAE's table is recomputed for any grid, as transformers builds it for its config: the same
    weights at 8 frames of 32 px give the same numbers in both."""
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
    hf.save_pretrained(tmp_path)
    ours = load_pretrained(tmp_path, num_frames=8, img_size=32)
    assert ours.config.num_frames == 8 and ours.config.img_size == (32, 32)
    bigger = transformers.VideoMAEForPreTraining(transformers.VideoMAEConfig(
        **{**hf.config.to_dict(), "num_frames": 8, "image_size": 32}))
    bigger.load_state_dict(hf.state_dict())
    mask = tube_mask(bigger.eval())
    assert_same_pretraining(bigger, ours, mask, mask=mask)


def test_a_hub_id_loads_from_the_local_cache(tmp_path, cache):  # noqa: F811
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
    hf.save_pretrained(tmp_path / "files")
    cache_model(cache, "MCG-NJU/videomae-tiny-test", tmp_path / "files")
    ours = load_pretrained("MCG-NJU/videomae-tiny-test")
    mask = tube_mask(hf)
    assert_same_pretraining(hf, ours, mask, mask=mask)


def test_info_and_convert_work_on_a_videomae_directory(tmp_path):
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4, use_mean_pooling=False)
    hf.save_pretrained(tmp_path / "hf")
    info = describe(tmp_path / "hf")
    assert info["format"] == "hf" and info["layout"] == "videomae_hub" and info["decoder_present"]
    assert info["architecture"]["num_frames"] == 4 and info["assumed"] == {}
    mask = tube_mask(hf)
    for fmt, name in (("vitmae", "ours"), ("official", "model.pth")):
        convert(tmp_path / "hf", tmp_path / name, fmt)
        assert_same_pretraining(hf, load_pretrained(tmp_path / name), mask, mask=mask)
    convert(tmp_path / "model.pth", tmp_path / "back", "hf")
    assert_same_pretraining(transformers.VideoMAEForPreTraining.from_pretrained(tmp_path / "back").eval(),
                            load_pretrained(tmp_path / "hf"), mask, mask=mask)


def test_what_transformers_cannot_hold_is_refused_and_what_it_computes_otherwise_is_warned(tmp_path):
    with pytest.raises(CheckpointError, match="cannot hold this model.*pos_embed_type='separable'"):
        export(MaskedAutoencoder(TINY_VIDEO.replace(pos_embed_type="separable")), tmp_path / "a", "hf")
    with pytest.raises(CheckpointError, match="timm has no video ViT"):
        export(MaskedAutoencoder(TINY_VIDEO), tmp_path / "b", "timm")
    _, warned = caught(InexactExportWarning, export, MaskedAutoencoder(TINY_VIDEO), tmp_path / "c", "hf")
    assert len(warned) == 1 and "decoder_norm_eps 1e-06 (transformers: 1e-05)" in str(warned[0].message)
    assert "the loss's target" in str(warned[0].message)


def test_a_config_field_that_is_not_a_square_patch_or_gelu_is_refused(tmp_path):
    hf = hf_videomae(image_size=16, patch_size=8, num_frames=4)
    hf.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    for field, value, message in (("hidden_act", "relu", "hidden_act 'relu'"),
                                  ("patch_size", [8, 4], "only square patches")):
        (tmp_path / "config.json").write_text(json.dumps({**config, field: value}))
        with pytest.raises(CheckpointError, match=message):
            load_pretrained(tmp_path)


def test_a_model_config_reads_every_videomae_field():
    """Nothing is guessed: each field of VideoMAEConfig that shapes the numbers lands in ModelConfig."""
    from vitmae.interop.keymaps import config_from_videomae

    hf = hf_videomae(image_size=[16, 24], patch_size=8, num_channels=2, num_frames=6, tubelet_size=3,
                     layer_norm_eps=1e-7, qv_bias=False, use_mean_pooling=True, norm_pix_loss=False,
                     decoder_num_attention_heads=4)
    values = config_from_videomae(hf.config.to_dict())
    config = ModelConfig(**values)
    assert (config.img_size, config.patch_size, config.in_chans, config.num_frames, config.tubelet_size) == \
        ((16, 24), 8, 2, 6, 3)
    assert (config.embed_dim, config.depth, config.num_heads, config.mlp_ratio) == (32, 2, 2, 2.0)
    assert (config.decoder_embed_dim, config.decoder_depth, config.decoder_num_heads) == (16, 2, 4)
    assert config.norm_eps == 1e-7 and not config.qkv_bias and not config.encoder_norm and not config.norm_pix_loss
    # the hub's configs name the query and value biases `qkv_bias`, as transformers still reads them
    old_name = {k: v for k, v in hf.config.to_dict().items() if k != "qv_bias"}
    assert config_from_videomae({**old_name, "qkv_bias": False})["qkv_bias"] is False
    assert transformers.VideoMAEConfig(**{**old_name, "qkv_bias": False}).qv_bias is False


@pytest.mark.parametrize("fmt, name", [("vitmae", "ours"), ("official", "model.pth")])
def test_an_mae_st_model_round_trips_through_our_formats_and_loads_at_another_size(tmp_path, fmt, name):
    torch.manual_seed(0)
    config = TINY_VIDEO.replace(pos_embed_type="separable", cls_token=True, mask_type="random")
    ours = MaskedAutoencoder(config).eval()
    export(ours, tmp_path / name, fmt)
    again = load_pretrained(tmp_path / name)
    assert again.config == config
    x, z = torch.randn(2, 3, 4, 16, 16), torch.rand(2, 8)
    with torch.no_grad():
        assert torch.equal(again.eval()(x, noise=z).pred, ours(x, noise=z).pred)
    bigger = load_pretrained(tmp_path / name, num_frames=8, img_size=32)
    assert bigger.encoder.pos_embed_spatial.shape == (1, 16, 32) and bigger.encoder.pos_embed_temporal.shape == (1, 4, 32)
    assert bigger.encoder.pos_embed_spatial.requires_grad
    expected = ours.encoder.pos_embed_for((4, 4, 4))
    assert torch.allclose(bigger.encoder.pos_embed_for((4, 4, 4)), expected, atol=1e-6)
    assert describe(tmp_path / name)["learned_position_tables"] == [
        "pos_embed_spatial", "pos_embed_temporal", "pos_embed_class", "decoder_pos_embed_spatial",
        "decoder_pos_embed_temporal", "decoder_pos_embed_class"]

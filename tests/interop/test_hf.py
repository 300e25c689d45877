"""Hugging Face: every layout transformers reads or writes loads with the same outputs, and our export loads
into transformers with no missing or unexpected keys."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from vitmae.config import ModelConfig
from vitmae.interop import CheckpointError, MissingDecoderWarning, describe, detect_format, export, load_pretrained
from vitmae.model import MaskedAutoencoder

from .conftest import TINY, assert_close_rel, assert_same_mae, caught, images, noise, v5_to_hub

transformers = pytest.importorskip("transformers")

HF_CONFIGS = {
    "eps1e-12": dict(image_size=32, patch_size=8, num_channels=3, layer_norm_eps=1e-12, norm_pix_loss=False),
    "normpix-1ch-48px": dict(image_size=48, patch_size=16, num_channels=1, layer_norm_eps=1e-6,
                             norm_pix_loss=True),
    "patch4-nobias-ratio2": dict(image_size=24, patch_size=4, num_channels=3, norm_pix_loss=True,
                                 qkv_bias=False, intermediate_size=128, decoder_intermediate_size=64,
                                 decoder_num_hidden_layers=1, decoder_num_attention_heads=2, mask_ratio=0.5),
}


def hf_mae(**kwargs):
    base = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
                decoder_hidden_size=32, decoder_num_hidden_layers=2, decoder_num_attention_heads=4,
                decoder_intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return transformers.ViTMAEForPreTraining(transformers.ViTMAEConfig(**{**base, **kwargs})).eval()


def write_layout(hf, path, layout: str):
    """A ViTMAEForPreTraining directory in one of the layouts a loader must accept."""
    if layout == "saved":  # what the installed transformers writes
        hf.save_pretrained(path)
        return
    hf.config.save_pretrained(path)
    state = {k: v.contiguous() for k, v in hf.state_dict().items()}
    if layout == "hub":  # the published files (transformers 4 names)
        save_file(v5_to_hub(state), path / "model.safetensors", metadata={"format": "pt"})
    elif layout == "v5_bin":  # a raw transformers-5 state_dict()
        torch.save(state, path / "pytorch_model.bin")
    elif layout == "v5_safetensors":
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})


def hf_matches(hf, ours: MaskedAutoencoder) -> None:
    x, z = images(ours.config), noise(ours.config)
    with torch.no_grad():
        a, b = hf(pixel_values=x, noise=z), ours.eval()(x, noise=z)
    assert_close_rel(b.loss, a.loss)
    assert_close_rel(b.pred, a.logits)
    assert torch.equal(b.mask, a.mask)


@pytest.mark.parametrize("layout", ["saved", "hub", "v5_bin", "v5_safetensors"])
@pytest.mark.parametrize("name", list(HF_CONFIGS))
def test_hf_layouts_load_with_identical_outputs(tmp_path, name, layout):
    hf = hf_mae(**HF_CONFIGS[name])
    write_layout(hf, tmp_path, layout)
    assert detect_format(tmp_path) == "hf"
    model, warned = caught(Warning, load_pretrained, tmp_path)
    assert not warned
    cfg = hf.config
    assert model.config.norm_eps == cfg.layer_norm_eps and model.config.norm_pix_loss == cfg.norm_pix_loss
    assert model.config.in_chans == cfg.num_channels and model.config.qkv_bias == cfg.qkv_bias
    hf_matches(hf, model)


def test_save_pretrained_layout_is_what_the_reference_says(tmp_path):
    """transformers 5.23 writes the encoder in the hub layout and the decoder blocks as
    decoder.decoder_encoder.layer.N (REFERENCE.md); if a release changes that, this says so first."""
    hf_mae().save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = set(f.keys())
    assert "vit.encoder.layer.0.attention.attention.query.weight" in keys
    assert "decoder.decoder_encoder.layer.0.attention.attention.query.weight" in keys
    assert describe(tmp_path)["layout"] == "hf_v5_saved"


@pytest.mark.parametrize("config", [
    TINY,
    ModelConfig(img_size=24, patch_size=4, in_chans=1, embed_dim=64, depth=1, num_heads=4, mlp_ratio=2.0,
                decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2, qkv_bias=False, norm_pix_loss=False),
])
def test_export_loads_into_transformers(tmp_path, config):
    torch.manual_seed(0)
    ours = MaskedAutoencoder(config).eval()
    export(ours, tmp_path / "hf", "hf")
    hf, info = transformers.ViTMAEForPreTraining.from_pretrained(tmp_path / "hf", output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")), info
    hf_matches(hf.eval(), ours)
    assert_same_mae(ours, load_pretrained(tmp_path / "hf"))


def test_export_writes_hub_names_and_full_config(tmp_path, tiny_model):
    export(tiny_model, tmp_path, "hf")
    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        written = set(f.keys())
    assert written == set(v5_to_hub(hf_mae().state_dict()))  # same depths as TINY; widths differ
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "vit_mae" and config["architectures"] == ["ViTMAEForPreTraining"]
    assert config["layer_norm_eps"] == 1e-6 and config["intermediate_size"] == 512
    assert config["decoder_intermediate_size"] == 128 and config["hidden_act"] == "gelu"


def test_non_square_cannot_be_exported_to_hf(tmp_path):
    model = MaskedAutoencoder(TINY.replace(img_size=(32, 16)))
    with pytest.raises(CheckpointError, match="square"):
        export(model, tmp_path, "hf")


def hf_vit(cls, **kwargs):
    torch.manual_seed(0)
    config = transformers.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                    intermediate_size=256, image_size=32, patch_size=8, **kwargs)
    return cls(config).eval()


def test_vit_classifier_encoder_loads(tmp_path):
    hf = hf_vit(transformers.ViTForImageClassification, num_labels=5)
    hf.save_pretrained(tmp_path)
    model, warned = caught(MissingDecoderWarning, load_pretrained, tmp_path)
    assert len(warned) == 1 and "classifier.weight" in str(warned[0].message)
    x = images(model.config)
    with torch.no_grad():  # ViTModel applies the final layernorm to last_hidden_state, as encode does
        assert_close_rel(model.encode(x), hf.vit(pixel_values=x).last_hidden_state)
    assert model.config.norm_eps == 1e-12


def test_bare_vit_model_loads(tmp_path):
    hf = hf_vit(transformers.ViTModel)  # keys without the vit. prefix, and a pooler
    hf.save_pretrained(tmp_path)
    model, warned = caught(MissingDecoderWarning, load_pretrained, tmp_path)
    assert len(warned) == 1 and "pooler.dense.weight" in str(warned[0].message)
    x = images(model.config)
    with torch.no_grad():
        assert_close_rel(model.encode(x), hf(pixel_values=x).last_hidden_state)


def test_hf_weights_file_without_config_uses_hf_eps(tmp_path):
    hf = hf_mae(image_size=32, patch_size=8)
    save_file({k: v.contiguous() for k, v in hf.state_dict().items()}, tmp_path / "w.safetensors")
    model = load_pretrained(tmp_path / "w.safetensors", num_heads=4, decoder_num_heads=4, norm_pix_loss=False)
    assert model.config.norm_eps == 1e-12
    hf_matches(hf, model)


def test_config_that_disagrees_with_weights_is_an_error(tmp_path):
    hf_mae().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(CheckpointError, match=r"depth=3 \(weights: 2\)"):
        load_pretrained(tmp_path)


def test_sharded_checkpoints_load_whole_and_a_missing_shard_is_named(tmp_path):
    """Large models are saved in shards with an index (model.safetensors.index.json)."""
    hf = hf_mae(image_size=32, patch_size=8)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    model = load_pretrained(tmp_path)
    hf_matches(hf, model)
    assert detect_format(tmp_path) == "hf"

    (tmp_path / shards[1]).unlink()
    with pytest.raises(CheckpointError, match=f"shard '{shards[1]}' is not a file beside it"):
        load_pretrained(tmp_path)

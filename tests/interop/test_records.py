"""Issue 13: every file vitmae writes rebuilds its model exactly (heads and eps are not in the weights), and
loading never guesses them silently; timm opens our timm export by itself; extensions; file modes."""
from __future__ import annotations

import json
import os
import stat
from functools import partial

import pytest
import timm
import torch
from safetensors import safe_open
from torch import nn

from vitmae.config import ModelConfig
from vitmae.interop import (CheckpointError, MissingDecoderWarning, describe, export, export_classifier,
                            load_classifier, load_encoder, load_pretrained, timm_create_kwargs)
from vitmae.model import MaskedAutoencoder
from vitmae.model.classifier import ViTClassifier
from vitmae.model.flat_names import flat_state_dict

from .conftest import assert_close_rel, assert_same_mae, caught, encoder_state, images

# The practitioner's model: 64 wide with 4 heads (the old rule read 1), a 4-head decoder (it read 16), and
# Hugging Face's eps, which timm's default (1e-6) would change.
NARROW = ModelConfig(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, decoder_embed_dim=32,
                     decoder_depth=1, decoder_num_heads=4, norm_eps=1e-12)

pytestmark = pytest.mark.usefixtures("one_thread")


def trained(model):
    """Every weight moved off its initial value (as training would), so no comparison is trivial."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


@pytest.fixture
def classifier() -> ViTClassifier:
    torch.manual_seed(0)
    return trained(ViTClassifier(NARROW, 5, "avg"))


@pytest.fixture
def mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return trained(MaskedAutoencoder(NARROW))


@pytest.mark.parametrize("to", ["timm", "official"])
def test_classifier_exports_read_back_exactly(tmp_path, classifier, to):
    path = export_classifier(classifier, tmp_path / "clf", to)
    back = load_classifier(path)
    assert back.config == classifier.config  # 4 heads, eps 1e-12: recorded, not inferred
    x = images(NARROW, n=3)
    with torch.no_grad():
        assert torch.equal(back(x), classifier(x))
    assert describe(path)["assumed"] == {}


@pytest.mark.parametrize("to", ["timm", "official"])
def test_mae_exports_read_back_exactly(tmp_path, mae, to):
    path = export(mae, tmp_path / "mae", to)
    back, _ = caught(MissingDecoderWarning, load_pretrained, path)  # timm: encoder only
    assert back.config == mae.config
    if to == "official":
        assert_same_mae(mae, back)
    x = images(NARROW)
    with torch.no_grad():
        assert torch.equal(back.encode(x), mae.encode(x))


def test_a_file_that_does_not_record_heads_is_refused_unless_they_are_given(tmp_path, mae):
    path = tmp_path / "plain.pth"
    torch.save({"model": flat_state_dict(mae)}, path)  # as the official scripts save: no heads, no eps
    with pytest.raises(CheckpointError) as err:
        load_pretrained(path)
    message = str(err.value)
    assert "num_heads" in message and "--num-heads" in message and "\n" not in message
    with pytest.raises(CheckpointError, match="--decoder-num-heads"):
        load_pretrained(path, num_heads=4)
    back = load_pretrained(path, num_heads=4, decoder_num_heads=4, norm_eps=1e-12)
    assert back.config == mae.config
    assert_same_mae(mae, back)
    # without the eps, the convention's 1e-6 is taken, and said so
    assumed = describe(path, num_heads=4, decoder_num_heads=4)["assumed"]
    assert list(assumed) == ["norm_eps"] and "1e-06" in assumed["norm_eps"]


def test_an_encoder_for_transfer_needs_only_the_encoder_heads(tmp_path, mae, run_cli):
    path = tmp_path / "plain.pth"
    torch.save({"model": flat_state_dict(mae)}, path)
    encoder = load_encoder(path, num_heads=4, norm_eps=1e-12)  # the decoder is not run: its heads are moot
    x = images(NARROW)
    with torch.no_grad():
        assert torch.equal(encoder.encode(x), mae.encode(x))
    result = run_cli("embed", "--checkpoint", path, "--data", "fashion-mnist", check=False)
    assert result.returncode == 2 and "--num-heads" in result.stderr


def test_standard_shapes_keep_the_convention_and_say_so(tmp_path):
    config = ModelConfig(img_size=32, patch_size=16, embed_dim=192, depth=12, num_heads=3)  # ViT-Ti/16
    torch.manual_seed(0)
    source = MaskedAutoencoder(config)
    path = tmp_path / "vit_tiny.pth"
    torch.save({"model": encoder_state(source)}, path)
    model, _ = caught(MissingDecoderWarning, load_pretrained, path)
    assert (model.config.num_heads, model.config.decoder_num_heads, model.config.norm_eps) == (3, 16, 1e-6)
    assumed = describe(path)["assumed"]
    assert set(assumed) == {"num_heads", "decoder_num_heads", "norm_eps"}
    assert assumed["num_heads"].startswith("3:")


def test_timm_export_carries_timm_arguments_and_eps(tmp_path, classifier):
    path = export_classifier(classifier, tmp_path / "clf", "timm")
    info = describe(path)
    assert info["norm_eps"] == 1e-12
    kwargs = timm_create_kwargs(path)
    args = {k: kwargs[k] for k in ("embed_dim", "depth", "num_heads", "patch_size", "in_chans", "num_classes",
                                   "global_pool", "fc_norm", "class_token", "qkv_bias")}
    assert args == dict(embed_dim=64, depth=2, num_heads=4, patch_size=8, in_chans=3, num_classes=5,
                        global_pool="avg", fc_norm=True, class_token=True, qkv_bias=True)
    assert kwargs["norm_layer"].keywords == {"eps": 1e-12}


@pytest.mark.parametrize("kind", ["classifier", "mae"])
def test_timm_create_model_opens_the_export(tmp_path, classifier, mae, kind):
    """timm's own loader (pretrained=True, file overlay), offline, gives our outputs."""
    model = classifier if kind == "classifier" else mae
    path = (export_classifier(classifier, tmp_path / "clf", "timm") if kind == "classifier"
            else export(mae, tmp_path / "enc", "timm"))
    assert path.suffix == ".safetensors"
    vit = timm.create_model(**timm_create_kwargs(path)).eval()
    x = images(NARROW, n=3)
    with torch.no_grad():
        if kind == "classifier":
            assert_close_rel(vit(x), model(x), rel=1e-6)
        else:
            assert_close_rel(vit.forward_features(x), model.encode(x), rel=1e-6)
    # the same from the metadata alone, as the README spells it out
    with safe_open(path, "pt") as f:
        meta = {k: json.loads(v) for k, v in f.metadata().items() if k.startswith(("timm_", "norm_eps"))}
    vit2 = timm.create_model(meta["timm_model_name"], pretrained=True,
                             pretrained_cfg_overlay=dict(file=str(path), **meta["timm_pretrained_cfg"]),
                             norm_layer=partial(nn.LayerNorm, eps=meta["norm_eps"]), **meta["timm_model_args"])
    with torch.no_grad():
        assert torch.equal(vit2.eval().forward_features(x), vit.forward_features(x))


def test_the_eps_changes_timm_logits(tmp_path, classifier):
    """Why the eps is recorded: timm's default LayerNorm eps gives other logits for this model."""
    kwargs = timm_create_kwargs(export_classifier(classifier, tmp_path / "clf", "timm"))
    del kwargs["norm_layer"]
    vit = timm.create_model(**kwargs).eval()
    x = images(NARROW, n=3)
    with torch.no_grad():
        assert not torch.allclose(vit(x), classifier(x), rtol=0, atol=1e-7)


def test_files_get_their_extension(tmp_path, mae):
    assert export(mae, tmp_path / "a", "timm") == tmp_path / "a.safetensors"
    assert export(mae, tmp_path / "b", "official") == tmp_path / "b.pth"
    assert export(mae, tmp_path / "c.pt", "official") == tmp_path / "c.pt"
    (tmp_path / "dir").mkdir()
    assert export(mae, tmp_path / "dir", "timm") == tmp_path / "dir" / "model.safetensors"


@pytest.mark.parametrize("to", ["vitmae", "hf", "timm", "official"])
def test_files_are_written_with_the_users_umask(tmp_path, mae, to):
    old = os.umask(0o022)
    try:
        out = export(mae, tmp_path / "out", to)
    finally:
        os.umask(old)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert out.exists() and files
    assert {stat.S_IMODE(p.stat().st_mode) for p in files} == {0o644}

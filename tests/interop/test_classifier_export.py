"""Fine-tuned classifiers across formats: timm and Hugging Face load our exports with identical logits, and
official / timm / Hugging Face fine-tuned files load into our classifier (real timm and transformers models)."""
from __future__ import annotations

import argparse
import json
from functools import partial

import pytest
import torch
from safetensors.torch import load_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitmae.interop import CheckpointError, export, export_classifier, load_classifier, load_encoder
from vitmae.model import MaskedAutoencoder
from vitmae.model.classifier import ViTClassifier, from_pretrained_encoder

from .conftest import TINY, assert_close_rel, images

NAMES = ["cat", "dog", "bird", "fish", "frog"]


pytestmark = pytest.mark.usefixtures("one_thread")


def fine_tuned(global_pool: str) -> ViTClassifier:
    """A classifier from a tiny MAE, with every weight moved away from its initial value (as training
    would), so that no part of the comparison is trivially zero or one."""
    torch.manual_seed(0)
    model = from_pretrained_encoder(MaskedAutoencoder(TINY), len(NAMES), global_pool)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def timm_classifier(global_pool: str, num_classes: int = len(NAMES)) -> VisionTransformer:
    c = TINY
    return VisionTransformer(img_size=c.img_size, patch_size=c.patch_size, in_chans=c.in_chans,
                             embed_dim=c.embed_dim, depth=c.depth, num_heads=c.num_heads, mlp_ratio=c.mlp_ratio,
                             num_classes=num_classes, global_pool=global_pool,
                             norm_layer=partial(nn.LayerNorm, eps=c.norm_eps)).eval()


@pytest.mark.parametrize("global_pool", ["avg", "token"])
def test_timm_loads_the_export_strictly_with_identical_logits(tmp_path, global_pool):
    model = fine_tuned(global_pool)
    path = export_classifier(model, tmp_path / "clf.safetensors", "timm")
    vit = timm_classifier(global_pool)
    assert (vit.fc_norm.__class__ is nn.LayerNorm) == (global_pool == "avg")
    vit.load_state_dict(load_file(path), strict=True)
    x = images(TINY, n=4)
    with torch.no_grad():
        assert_close_rel(vit(x), model(x), rel=1e-6)
        assert_close_rel(load_classifier(path)(x), model(x), rel=1e-6)  # and back


def test_hugging_face_loads_the_cls_token_export_with_identical_logits(tmp_path):
    from transformers import ViTForImageClassification

    model = fine_tuned("token")
    out = export_classifier(model, tmp_path / "hf", "hf", class_names=NAMES)
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == "vit" and config["architectures"] == ["ViTForImageClassification"]
    assert config["id2label"] == {str(i): n for i, n in enumerate(NAMES)}
    assert "classifier.weight" in load_file(out / "model.safetensors")
    hf = ViTForImageClassification.from_pretrained(out).eval()
    x = images(TINY, n=4)
    with torch.no_grad():
        assert_close_rel(hf(pixel_values=x).logits, model(x), rel=1e-5)
        back = load_classifier(out)
        assert back.global_pool == "token" and back.class_names == NAMES
        assert_close_rel(back(x), model(x), rel=1e-6)


def test_average_pooling_cannot_be_written_for_hugging_face(tmp_path):
    with pytest.raises(CheckpointError, match="cls token.*--pool cls"):
        export_classifier(fine_tuned("avg"), tmp_path / "hf", "hf")
    assert not (tmp_path / "hf").exists()


def test_official_fine_tuned_checkpoint_loads_into_the_classifier(tmp_path):
    """models_vit.py (timm's VisionTransformer, global_pool avg) as main_finetune.py saves it: fc_norm and
    head, no norm, plus the run's args."""
    torch.manual_seed(1)
    official = timm_classifier("avg", num_classes=7)
    path = tmp_path / "checkpoint-99.pth"
    torch.save({"model": official.state_dict(), "epoch": 99,
                "args": argparse.Namespace(input_size=32, nb_classes=7, global_pool=True)}, path)
    model = load_classifier(path, num_heads=TINY.num_heads)
    assert model.global_pool == "avg" and model.num_classes == 7 and model.config.img_size == (32, 32)
    x = images(TINY, n=3)
    with torch.no_grad():
        assert_close_rel(model(x), official(x), rel=1e-6)
    # Fine-tuning again from it: its encoder (no final norm) moves to a new classifier.
    encoder = load_encoder(path, num_heads=TINY.num_heads)
    assert isinstance(encoder, ViTClassifier)
    again = from_pretrained_encoder(encoder, 3, "avg")
    assert torch.equal(again.encoder.blocks[1].attn.proj.weight, official.blocks[1].attn.proj.weight)


def test_a_pretrained_file_is_not_a_classifier(tmp_path):
    torch.manual_seed(0)
    path = export(MaskedAutoencoder(TINY), tmp_path / "mae", "vitmae")
    with pytest.raises(CheckpointError, match="not a classifier"):
        load_classifier(path)
    assert isinstance(load_encoder(path), MaskedAutoencoder)


def test_vitmae_and_official_exports_round_trip_at_another_resolution(tmp_path):
    model = fine_tuned("avg")
    for fmt, name in (("vitmae", "clf"), ("official", "clf.pth")):
        path = export_classifier(model, tmp_path / name, fmt)
        back = load_classifier(path)
        x = images(TINY, n=2)
        with torch.no_grad():
            assert_close_rel(back(x), model(x), rel=1e-6)
        bigger = load_classifier(path, img_size=48)  # learned table interpolated to a 6x6 grid
        assert bigger.encoder.pos_embed.shape[1] == 1 + 36
        assert bigger(torch.randn(1, 3, 48, 48)).shape == (1, len(NAMES))


def test_cli_info_and_convert_take_a_fine_tuned_classifier(run_cli, tmp_path):
    model = fine_tuned("avg")
    export_classifier(model, tmp_path / "finetuned.pth", "official")  # records the heads, which info needs
    info = json.loads(run_cli("info", tmp_path / "finetuned.pth").stdout)
    assert info["kind"] == "classifier" and info["global_pool"] == "avg"
    assert info["num_classes"] == model.num_classes
    run_cli("convert", tmp_path / "finetuned.pth", tmp_path / "timm.safetensors", "--to", "timm")
    timm_model = timm_classifier("avg")
    timm_model.load_state_dict(load_file(tmp_path / "timm.safetensors"), strict=True)
    x = images(TINY)
    with torch.no_grad():
        assert_close_rel(timm_model.eval()(x), model.eval()(x), rel=1e-6)

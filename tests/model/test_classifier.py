"""The classifier: timm names and pooling, initialisation from an MAE, layer ids and layer-wise lr decay."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vitmae.config import ModelConfig
from vitmae.model import MaskedAutoencoder
from vitmae.model.classifier import ViTClassifier, from_pretrained_encoder
from vitmae.model.flat_names import flat_named_parameters, flat_state_dict
from vitmae.train.optim import set_lr
from tests.model.checkpointing import assert_checkpointing_keeps_the_gradients

TINY = ModelConfig(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=2, num_heads=2,
                   decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def mae() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(TINY)


def test_avg_pool_classifier_has_timm_names_and_no_final_norm(mae):
    model = from_pretrained_encoder(mae, 7, "avg", drop_path_rate=0.1)
    keys = set(flat_state_dict(model))
    assert {"fc_norm.weight", "fc_norm.bias", "head.weight", "head.bias", "cls_token", "pos_embed"} <= keys
    assert not any(k.startswith("norm.") for k in keys)
    assert not any(k.startswith(("decoder_", "mask_token")) for k in keys)
    # Encoder weights are the MAE's; the position table becomes learned; fc_norm starts at identity.
    assert torch.equal(model.encoder.blocks[1].attn.qkv.weight, mae.encoder.blocks[1].attn.qkv.weight)
    assert torch.equal(model.encoder.pos_embed, mae.encoder.pos_embed) and model.encoder.pos_embed.requires_grad
    assert torch.equal(model.fc_norm.weight, torch.ones(32)) and torch.equal(model.fc_norm.bias, torch.zeros(32))
    # Head: trunc_normal(std 2e-5), bias 0.
    assert model.head.weight.abs().max() < 1e-4 and model.head.weight.std() > 0
    assert torch.equal(model.head.bias, torch.zeros(7))
    # Drop path grows linearly to the rate in the last block.
    assert model.encoder.blocks[0].drop_path.__class__.__name__ == "Identity"
    assert model.encoder.blocks[1].drop_path.drop_prob == pytest.approx(0.1)


def test_pooling(mae):
    x = torch.randn(3, 1, 28, 28)
    avg = from_pretrained_encoder(mae, 5, "avg").eval()
    token = from_pretrained_encoder(mae, 5, "token").eval()
    with torch.no_grad():
        tokens = mae.encoder.prepend_cls(mae.encoder.embed_patches(x))
        for block in mae.encoder.blocks:  # before the final norm
            tokens = block(tokens)
        assert torch.allclose(avg.forward_head(avg.forward_features(x), pre_logits=True),
                              avg.fc_norm(tokens[:, 1:].mean(dim=1)), atol=1e-6)
        assert torch.allclose(token.forward_head(token.forward_features(x), pre_logits=True),
                              mae.encoder.norm(tokens)[:, 0], atol=1e-6)
        assert avg(x).shape == (3, 5) and token(x).shape == (3, 5)


def test_layer_ids_and_layer_decay_lr_scales(mae):
    model = from_pretrained_encoder(mae, 4, "avg")
    depth = 2
    assert model.num_layers == depth + 1
    assert [model.layer_id(n) for n in ("cls_token", "pos_embed", "patch_embed.proj.weight")] == [0, 0, 0]
    assert model.layer_id("blocks.0.attn.qkv.weight") == 1 and model.layer_id("blocks.1.mlp.fc2.bias") == 2
    assert model.layer_id("fc_norm.weight") == model.layer_id("head.weight") == depth + 1

    groups = model.param_groups(weight_decay=0.05, layer_decay=0.5)
    optimizer = torch.optim.AdamW(groups, lr=1.0)
    set_lr(optimizer, 0.1)  # what the engine does every step
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    decay_of = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    params = dict(flat_named_parameters(model))
    expected_lr = {"patch_embed.proj.weight": 0.1 * 0.5**3, "cls_token": 0.1 * 0.5**3,
                   "blocks.0.attn.qkv.weight": 0.1 * 0.5**2, "blocks.1.norm1.weight": 0.1 * 0.5,
                   "head.weight": 0.1, "fc_norm.bias": 0.1}
    for name, lr in expected_lr.items():
        assert lr_of[id(params[name])] == pytest.approx(lr), name
    # No weight decay on 1-D parameters, biases, the cls token and the position table (official recipe).
    for name in ("cls_token", "pos_embed", "blocks.0.norm1.weight", "head.bias"):
        assert decay_of[id(params[name])] == 0.0, name
    for name in ("patch_embed.proj.weight", "blocks.1.mlp.fc1.weight", "head.weight"):
        assert decay_of[id(params[name])] == 0.05, name
    assert sum(len(g["params"]) for g in groups) == len(params)


def test_scratch_classifier_uses_the_mae_initialisation():
    torch.manual_seed(0)
    model = ViTClassifier(TINY, 10, "token")
    assert model.encoder.pos_embed.requires_grad
    assert torch.allclose(model.encoder.pos_embed, MaskedAutoencoder(TINY).encoder.pos_embed)  # sin-cos start
    assert isinstance(model.encoder.norm, torch.nn.LayerNorm)
    with pytest.raises(ValueError, match="global_pool"):
        ViTClassifier(TINY, 10, "max")


def test_classifier_from_a_token_classifier_keeps_or_adds_the_final_norm(mae):
    avg = from_pretrained_encoder(mae, 3, "avg")
    again = from_pretrained_encoder(avg, 3, "token")  # an avg-pool model has no final norm: a fresh one
    assert torch.equal(again.encoder.norm.weight, torch.ones(32))
    assert torch.equal(again.encoder.blocks[0].mlp.fc1.weight, mae.encoder.blocks[0].mlp.fc1.weight)


def test_training_step_changes_every_trainable_parameter(mae):
    model = from_pretrained_encoder(mae, 4, "avg")
    optimizer = torch.optim.AdamW(model.param_groups(0.05, 0.75), lr=1e-3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 1, 28, 28)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == set(before)


def test_grad_checkpointing_keeps_the_gradients_with_drop_path(mae):
    """The recomputed blocks draw the same drop-path masks as the first pass."""
    model = from_pretrained_encoder(mae, 7, "avg", drop_path_rate=0.3).train()
    images, labels = torch.randn(4, 1, 28, 28), torch.tensor([0, 3, 6, 1])
    assert_checkpointing_keeps_the_gradients(model, lambda m: F.cross_entropy(m(images), labels))
    assert model.encoder.grad_checkpointing

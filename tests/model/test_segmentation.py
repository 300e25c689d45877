"""The segmentation model: logits at the input's size for any patch size, depth and input shape; the linear
probe; layer-wise decay groups. (Its pyramid: tests/model/test_necks.py.)"""
from __future__ import annotations

import pytest
import torch

from vitmae.model import ViTEncoder, model_config
from vitmae.model.flat_names import flat_state_dict
from vitmae.model.segmentation import HeadBatchNorm, Segmenter, default_out_indices
from tests.model.checkpointing import assert_checkpointing_keeps_the_gradients


def _encoder(patch_size: int, depth: int, size=(32, 32), in_chans=1) -> ViTEncoder:
    config = model_config("mae_vit_micro_patch4_28", img_size=size, patch_size=patch_size, embed_dim=32,
                          depth=depth, num_heads=2, in_chans=in_chans)
    return ViTEncoder(config)


def test_default_out_indices_follow_the_recipe():
    assert default_out_indices(12) == [3, 5, 7, 11] and default_out_indices(24) == [7, 11, 15, 23]
    for depth in (1, 2, 4, 6):
        taken = default_out_indices(depth)
        assert len(taken) == 4 and taken[-1] == depth - 1 and taken == sorted(taken) and min(taken) >= 0


@pytest.mark.parametrize("head", ["upernet", "linear"])
@pytest.mark.parametrize("depth, patch_size, size", [(1, 4, (28, 28)), (4, 4, (32, 24)), (6, 8, (32, 40))])
def test_logits_come_at_the_input_size(head, depth, patch_size, size):
    torch.manual_seed(0)
    model = Segmenter(_encoder(patch_size, depth, size), num_classes=5, head=head)
    images = torch.randn(2, 1, *size)
    model.train()
    out = model(images)
    if head == "upernet":
        logits, aux = out
        assert aux.shape == logits.shape
        (logits.sum() + aux.sum()).backward()
        assert model.encoder.blocks[0].attn.qkv.weight.grad is not None
    else:
        logits = out
    assert logits.shape == (2, 5, *size)
    model.eval()
    with torch.no_grad():
        assert model(images).shape == (2, 5, *size)  # evaluation: the main head alone


def test_state_dict_keeps_the_encoders_flat_names_and_layer_decay():
    model = Segmenter(_encoder(4, 4), num_classes=3)
    assert "encoder.blocks.0.attn.qkv.weight" in model.state_dict()
    keys = flat_state_dict(model).keys()
    assert "blocks.0.attn.qkv.weight" in keys and "patch_embed.proj.weight" in keys
    assert any(k.startswith("head.") for k in keys) and any(k.startswith("aux_head.") for k in keys)
    groups = model.param_groups(weight_decay=0.05, layer_decay=0.65)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    assert scale[id(model.encoder.patch_embed.proj.weight)] == pytest.approx(0.65 ** 5)
    assert scale[id(model.encoder.blocks[3].attn.qkv.weight)] == pytest.approx(0.65)
    assert scale[id(model.head.classifier[1].weight)] == 1.0
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model.head.classifier[1].bias)] == 0.0 and decay[id(model.head.classifier[1].weight)] == 0.05


def test_what_the_features_skip_is_frozen():
    model = Segmenter(_encoder(4, 4), num_classes=3, out_indices=[0, 1, 1, 2])
    assert not any(p.requires_grad for p in model.encoder.norm.parameters())
    assert not any(p.requires_grad for p in model.encoder.blocks[3].parameters())
    assert all(p.requires_grad for p in model.encoder.blocks[2].parameters())
    model.train()
    logits, aux = model(torch.randn(2, 1, 32, 32))
    (logits.sum() + aux.sum()).backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)  # DDP's requirement


def test_grad_checkpointing_keeps_the_gradients():
    torch.manual_seed(0)
    model = Segmenter(_encoder(4, 4), 3).train()
    images = torch.randn(2, 1, 32, 32)
    assert_checkpointing_keeps_the_gradients(model, lambda m: m(images)[0].square().mean())
    assert model.encoder.grad_checkpointing


def _with_plain_batchnorm(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with torch's own BatchNorm2d in place of each HeadBatchNorm: the heads as they were before."""
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, HeadBatchNorm):
                setattr(module, name, torch.nn.BatchNorm2d(child.num_features))
    return model


@pytest.mark.parametrize("head", ["upernet", "linear"])
def test_the_heads_train_on_a_batch_of_one_and_are_unchanged_on_larger_batches(head):
    """Issue 24: a batch of one image (batch size 1, or a batch that lost the others to unreadable files) has
    one value per channel after the UperNet's 1x1 pooling (and on every level 1x1 at this small size); its
    BatchNorm uses the running statistics there. Larger batches go through nn.BatchNorm2d's own
    computation, bit for bit: outputs, gradients and running statistics."""
    torch.manual_seed(0)
    model = Segmenter(_encoder(4, 2), num_classes=3, head=head).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(torch.randn(1, 1, 32, 32))
    sum(o.sum() for o in (out if isinstance(out, tuple) else (out,))).backward()
    pooled = model.head.psp[0][1][1] if head == "upernet" else model.head.body[0]
    assert isinstance(pooled, HeadBatchNorm)
    if head == "upernet":  # one value per channel: no statistics taken from it
        assert torch.equal(pooled.running_mean, before["head.psp.0.1.1.running_mean"])

    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = _with_plain_batchnorm(Segmenter(_encoder(4, 2), num_classes=3, head=head)).train()
    assert not any(isinstance(m, HeadBatchNorm) for m in plain.modules())
    plain.load_state_dict(state)
    outputs, grads = [], []
    for m in (model, plain):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(1)  # the same dropout
        out = m(torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(2)))
        out = out if isinstance(out, tuple) else (out,)
        sum(o.sum() for o in out).backward()
        outputs.append(out)
        grads.append({n: p.grad for n, p in m.named_parameters() if p.grad is not None})
    assert all(torch.equal(a, b) for a, b in zip(*outputs))
    assert grads[0].keys() == grads[1].keys() and all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), plain.state_dict().values()))

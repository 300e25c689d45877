"""`vitmae.load_classifier(ckpt, num_classes=K)`: an MAE checkpoint becomes a classifier with a new head in
one call; a classifier with K classes keeps its own."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vitmae
from vitmae.interop import export_classifier
from vitmae.model.classifier import HEAD_INIT_STD

from .conftest import TINY, images

pytestmark = pytest.mark.usefixtures("one_thread")


def test_mae_checkpoint_to_a_classifier_that_trains(tmp_path, tiny_model):
    path = vitmae.export(tiny_model, tmp_path / "mae", "official")
    model = vitmae.load_classifier(path, num_classes=4, global_pool="avg")
    assert (model.num_classes, model.global_pool, model.training) == (4, "avg", True)
    assert torch.equal(model.encoder.blocks[0].attn.qkv.weight, tiny_model.encoder.blocks[0].attn.qkv.weight)
    assert model.head.weight.std() < 10 * HEAD_INIT_STD  # a new head, at the official init
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = images(TINY, n=4), torch.tensor([0, 1, 2, 3])
    before = model.head.weight.detach().clone()
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and not torch.equal(model.head.weight, before)
    assert model.encoder.blocks[0].attn.qkv.weight.grad is not None  # the encoder trains too


def test_a_classifier_with_k_classes_keeps_its_head(tmp_path, tiny_model):
    first = vitmae.load_classifier(vitmae.export(tiny_model, tmp_path / "mae", "vitmae"), num_classes=3,
                                   global_pool="token")
    with torch.no_grad():
        first.head.weight.normal_()
    path = export_classifier(first.eval(), tmp_path / "clf", "timm")
    same = vitmae.load_classifier(path, num_classes=3)
    assert same.global_pool == "token" and torch.equal(same.head.weight, first.head.weight)
    x = images(TINY)
    with torch.no_grad():
        assert torch.equal(same.eval()(x), first(x))
    other = vitmae.load_classifier(path, num_classes=5)  # another task: its encoder, a new head
    assert other.num_classes == 5 and torch.equal(other.encoder.blocks[1].mlp.fc1.weight, first.encoder.blocks[1].mlp.fc1.weight)
    assert vitmae.load_classifier(path, num_classes=3, global_pool="avg").global_pool == "avg"

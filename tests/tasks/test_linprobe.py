"""LARS against a hand-written reference, and linear probes of a frozen encoder on real images."""
from __future__ import annotations

import json

import pytest
import torch

from vitmae.config import LinprobeOptions
from vitmae.data import FashionMNISTSource
from vitmae.data.labels import SubsetSource, labeled_splits, source_labels, stratified_indices
from vitmae.interop import export, load_classifier
from vitmae.model import create_model
from vitmae.families.encoder import load_encoder_or_random
from vitmae.families.features import encode_source
from vitmae.tasks.linprobe import linprobe
from vitmae.train.runtime import Runtime
from vitmae.data import EvalTransform, default_normalization
from vitmae.train.lars import LARS

TINY_ARCH = dict(embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_lars_matches_the_official_update():
    torch.manual_seed(0)
    w = torch.randn(4, 3, requires_grad=True)
    b = torch.randn(4, requires_grad=True)
    zero = torch.zeros(2, 2, requires_grad=True)  # |p| = 0: trust ratio 1
    lr, wd, momentum, eta = 0.5, 0.1, 0.9, 0.001
    opt = LARS([w, b, zero], lr=lr, weight_decay=wd, momentum=momentum, trust_coefficient=eta)
    ref = {"w": w.detach().clone(), "b": b.detach().clone(), "zero": zero.detach().clone()}
    mu = {k: torch.zeros_like(v) for k, v in ref.items()}
    for step in range(3):
        grads = {"w": torch.randn(4, 3), "b": torch.randn(4), "zero": torch.randn(2, 2)}
        for p, k in ((w, "w"), (b, "b"), (zero, "zero")):
            p.grad = grads[k].clone()
        opt.step()
        for k in ref:
            g = grads[k]
            if ref[k].ndim > 1:  # decay and trust ratio on matrices only
                g = g + wd * ref[k]
                pn, gn = ref[k].norm(), g.norm()
                g = g * (eta * pn / gn if pn > 0 and gn > 0 else 1.0)
            mu[k] = momentum * mu[k] + g
            ref[k] = ref[k] - lr * mu[k]
        assert torch.allclose(w, ref["w"], atol=1e-6) and torch.allclose(b, ref["b"], atol=1e-6)
        assert torch.allclose(zero, ref["zero"], atol=1e-6)
    assert not torch.equal(zero, torch.zeros(2, 2))


def write_csv(source, folder):
    """The images of `source` as PNG files and a CSV of path,label beside them."""
    folder.mkdir(parents=True)
    rows = []
    for i in range(len(source)):
        image, label = source[i]
        image.save(folder / f"{i:04d}.png")
        rows.append(f"{i:04d}.png,{label}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    return folder / "labels.csv"


def test_linear_probe_learns_fashion_mnist_from_frozen_features(tmp_path):
    torch.manual_seed(0)
    checkpoint = export(create_model("mae_vit_micro_patch4_28", **TINY_ARCH), tmp_path / "mae", "vitmae").parent
    _, test, _ = labeled_splits("fashion-mnist", None, 1)
    test = SubsetSource(test, stratified_indices(source_labels(test), per_class=30, seed=0))
    val_csv = write_csv(test, tmp_path / "val")  # 300 test images, as a user's CSV of path,label
    before = {k: v.clone() for k, v in load_encoder_or_random(str(checkpoint)).state_dict().items()}
    # 200 labels: LARS moves each weight matrix by about lr * trust coefficient of its norm per step, so
    # the official blr (0.1, for ~1M images and batch 16384) barely moves the probe in so few steps; a
    # small labeled set needs more epochs and a larger blr.
    cfg = LinprobeOptions(output=str(tmp_path / "probe"), checkpoint=str(checkpoint), labels_per_class=20,
                         val_data=str(val_csv), epochs=100, warmup_epochs=10, batch_size=32, blr=30.0,
                         num_workers=0, log_every_steps=1000, eval_every_epochs=10)
    s = linprobe(cfg)
    assert s["train_images"] == 200 and s["val_images"] == 300 and s["pool"] == "cls"
    assert [h["epoch"] for h in s["history"]] == list(range(10, 101, 10)) and s["steps"] == 100 * (200 // 32)
    # Chance is 10%; a well-fitted logistic regression on these 32-dim random-encoder features reaches
    # about 58% (checked with L-BFGS when this test was written).
    assert s["top1"] > 35, s["top1"]
    assert json.loads((tmp_path / "probe" / "metrics.json").read_text())["top1"] == s["top1"]

    # The encoder stayed frozen, and encoder + probe fold into one classifier with the same outputs.
    classifier = load_classifier(s["classifier"])
    assert classifier.global_pool == "token"
    assert all(torch.equal(classifier.state_dict()[k], v) for k, v in before.items() if k in classifier.state_dict())
    encoder = load_encoder_or_random(str(checkpoint))
    mean, std = default_normalization(1, "fashion-mnist")
    features = encode_source(encoder, test, EvalTransform(28, mean, std), "cls", Runtime("cpu"))
    images = torch.stack([EvalTransform(28, mean, std)(test[i][0]) for i in range(len(test))])
    with torch.no_grad():
        predictions = classifier(images).argmax(dim=1)
    accuracy = 100 * (predictions == features.labels).float().mean().item()
    assert accuracy == pytest.approx(s["top1"], abs=1e-3)


def test_linprobe_cli_without_cached_features(run_cli, tmp_path):
    """The official recipe end to end: the encoder runs every step on crops and flips."""
    torch.manual_seed(0)
    checkpoint = export(create_model("mae_vit_micro_patch4_28", **TINY_ARCH), tmp_path / "mae", "vitmae").parent
    data = tmp_path / "data"
    source = FashionMNISTSource("test")
    from PIL import Image

    for split, offset in (("train", 0), ("val", 8)):
        for c in range(3):
            (data / split / f"c{c}").mkdir(parents=True)
            for j, i in enumerate((source.labels == c).nonzero()[0][offset:offset + 8]):
                Image.fromarray(source.images[i]).save(data / split / f"c{c}" / f"{j}.png")
    out = tmp_path / "probe"
    result = run_cli("linprobe", "--checkpoint", checkpoint, "--data", data, "--no-cache-features", "--epochs", "2",
                     "--batch-size", "8", "--blr", "1.0", "--warmup-epochs", "0", "--num-workers", "0",
                     "--output", out)
    assert "linear probe top-1" in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["cache_features"] is False and m["steps"] == 2 * 3 and m["val_images"] == 24
    assert 0 <= m["top1"] <= 100 and len(m["history"]) == 2

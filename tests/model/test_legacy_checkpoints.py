"""Checkpoints written before the encoder became a component (tests/fixtures/legacy, made by the code of
commit 65767b2) load today and compute bit-identical outputs."""
from pathlib import Path

import torch
from safetensors.torch import load_file

from vitmae import load_pretrained
from vitmae.interop.classifier import load_classifier

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def test_legacy_mae_checkpoint_gives_identical_loss_prediction_and_features():
    expected = load_file(LEGACY / "expected.safetensors")
    model = load_pretrained(LEGACY / "mae").eval()
    with torch.no_grad():
        out = model(expected["images"], noise=expected["noise"])
        assert torch.equal(out.loss.reshape(1), expected["loss"])
        assert torch.equal(out.pred, expected["pred"])
        assert torch.equal(out.mask, expected["mask"])
        assert torch.equal(model.encode(expected["images"]), expected["encode"])
        other_size = torch.randn(2, 1, 36, 28, generator=torch.Generator().manual_seed(1))
        assert torch.equal(model.encode(other_size), expected["encode_36"])


def test_legacy_classifier_checkpoint_gives_identical_logits():
    expected = load_file(LEGACY / "expected.safetensors")
    model = load_classifier(LEGACY / "classifier").eval()
    with torch.no_grad():
        assert torch.equal(model(expected["images"]), expected["logits"])
        other_size = torch.randn(2, 1, 36, 28, generator=torch.Generator().manual_seed(1))
        assert torch.equal(model(other_size), expected["logits_36"])

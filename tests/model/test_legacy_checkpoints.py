"""Checkpoints written before the encoder became a component (tests/fixtures/legacy, made by the code of
commit 65767b2) load today and compute the same outputs: to float32 rounding, since the fixture was made on
another CPU, whose vector kernels may round differently (1e-6 apart on an AVX-512 EPYC); a wrong key or
layer would be off by orders of magnitude more."""
from pathlib import Path

import torch
from torch.testing import assert_close
from safetensors.torch import load_file

from vitmae import load_pretrained
from vitmae.interop import load_classifier

LEGACY = Path(__file__).resolve().parents[1] / "fixtures" / "legacy"


def test_legacy_mae_checkpoint_gives_the_same_loss_prediction_and_features():
    expected = load_file(LEGACY / "expected.safetensors")
    model = load_pretrained(LEGACY / "mae").eval()
    with torch.no_grad():
        out = model(expected["images"], noise=expected["noise"])
        assert_close(out.loss.reshape(1), expected["loss"], rtol=1.3e-6, atol=1e-5)
        assert_close(out.pred, expected["pred"], rtol=1.3e-6, atol=1e-5)
        assert torch.equal(out.mask, expected["mask"])
        assert_close(model.encode(expected["images"]), expected["encode"], rtol=1.3e-6, atol=1e-5)
        other_size = torch.randn(2, 1, 36, 28, generator=torch.Generator().manual_seed(1))
        assert_close(model.encode(other_size), expected["encode_36"], rtol=1.3e-6, atol=1e-5)


def test_legacy_classifier_checkpoint_gives_the_same_logits():
    expected = load_file(LEGACY / "expected.safetensors")
    model = load_classifier(LEGACY / "classifier").eval()
    with torch.no_grad():
        assert_close(model(expected["images"]), expected["logits"], rtol=1.3e-6, atol=1e-5)
        other_size = torch.randn(2, 1, 36, 28, generator=torch.Generator().manual_seed(1))
        assert_close(model(other_size), expected["logits_36"], rtol=1.3e-6, atol=1e-5)

"""Tiny models and independent helpers for the interop tests (no mocks: real transformers and timm models)."""
from __future__ import annotations

import warnings

import pytest
import torch

from vitmae.config import ModelConfig
from vitmae.model import MaskedAutoencoder
from vitmae.model.flat_names import flat_state_dict

TINY = ModelConfig(img_size=32, patch_size=8, in_chans=3, embed_dim=128, depth=2, num_heads=2,
                   decoder_embed_dim=32, decoder_depth=2, decoder_num_heads=16)
# A video MAE of VideoMAE's shape: 4 frames of 16 px in 2 x 8 x 8 tubelets (8 tokens).
TINY_VIDEO = ModelConfig(num_frames=4, tubelet_size=2, img_size=16, patch_size=8, in_chans=3, embed_dim=32, depth=2,
                         num_heads=2, decoder_embed_dim=16, decoder_depth=2, decoder_num_heads=2)
# Not a standard ViT shape: a file that does not record TINY's heads loads with them given.
TINY_HEADS = dict(num_heads=TINY.num_heads, decoder_num_heads=TINY.decoder_num_heads)


@pytest.fixture
def tiny_model() -> MaskedAutoencoder:
    torch.manual_seed(0)
    return MaskedAutoencoder(TINY).eval()


def images(config: ModelConfig, n: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, config.in_chans, *config.img_size, generator=g)


def noise(config: ModelConfig, n: int = 2, seed: int = 2) -> torch.Tensor:
    return torch.rand(n, config.num_patches, generator=torch.Generator().manual_seed(seed))


def assert_close_rel(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-5) -> None:
    """Agreement relative to the size of `expected` (elementwise relative error is meaningless near 0)."""
    scale = expected.abs().max().clamp_min(1e-12)
    assert (actual - expected).abs().max() <= rel * scale, (actual - expected).abs().max() / scale


def assert_same_mae(a: MaskedAutoencoder, b: MaskedAutoencoder) -> None:
    x, z = images(a.config), noise(a.config)
    with torch.no_grad():
        oa, ob = a.eval()(x, noise=z), b.eval()(x, noise=z)
    assert_close_rel(ob.loss, oa.loss)
    assert_close_rel(ob.pred, oa.pred)
    assert torch.equal(ob.mask, oa.mask)


def encoder_state(model: MaskedAutoencoder) -> dict[str, torch.Tensor]:
    """The official encoder-only layout (mae_pretrain_vit_*.pth), spelled out here independently."""
    return {k: v for k, v in flat_state_dict(model).items() if k != "mask_token" and not k.startswith("decoder_")}


def v5_to_hub(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers 5's in-memory names -> the hub (transformers 4) names, written from REFERENCE.md's
    list rather than from vitmae's key tables, so the tests check those tables."""
    renames = [("vit.layers.", "vit.encoder.layer."), (".attention.q_proj.", ".attention.attention.query."),
               (".attention.k_proj.", ".attention.attention.key."),
               (".attention.v_proj.", ".attention.attention.value."),
               (".attention.o_proj.", ".attention.output.dense."), (".mlp.fc1.", ".intermediate.dense."),
               (".mlp.fc2.", ".output.dense.")]
    out = {}
    for key, value in state.items():
        for old, new in renames:
            key = key.replace(old, new)
        out[key] = value.clone()
    return out


def caught(category: type[Warning], fn, *args, **kwargs):
    """(result, the warnings of `category` that `fn` raised)."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = fn(*args, **kwargs)
    return result, [w for w in record if issubclass(w.category, category)]

"""timm: our export loads strictly into timm's VisionTransformer, and timm's weights load into our encoder."""
from __future__ import annotations

from functools import partial

import pytest
import torch
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vitmae.config import ModelConfig
from vitmae.interop import MissingDecoderWarning, detect_format, export, load_pretrained

from .conftest import TINY, assert_close_rel, caught, images


def timm_vit(config: ModelConfig, **kwargs) -> VisionTransformer:
    """The timm model our encoder equals: cls token, final norm on every token, no fc_norm, no head."""
    args = dict(img_size=config.img_size, patch_size=config.patch_size, in_chans=config.in_chans,
                embed_dim=config.embed_dim, depth=config.depth, num_heads=config.num_heads,
                mlp_ratio=config.mlp_ratio, qkv_bias=config.qkv_bias, class_token=True, global_pool="token",
                fc_norm=False, num_classes=0, norm_layer=partial(nn.LayerNorm, eps=config.norm_eps))
    return VisionTransformer(**{**args, **kwargs}).eval()


def test_export_loads_strictly_into_timm(tmp_path, tiny_model):
    path = export(tiny_model, tmp_path / "vit.safetensors", "timm")
    state = load_file(path)
    assert "mask_token" not in state and not any(k.startswith("decoder_") for k in state)
    vit = timm_vit(TINY)
    vit.load_state_dict(state, strict=True)
    x = images(TINY)
    with torch.no_grad():
        assert_close_rel(vit.forward_features(x), tiny_model.encode(x))
    assert detect_format(path) == "timm"


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_timm_weights_load_into_our_encoder(tmp_path, suffix):
    torch.manual_seed(0)
    vit = timm_vit(TINY, num_classes=10)  # a classifier: its head is left out, and said so
    path = tmp_path / f"vit{suffix}"
    state = {k: v.contiguous() for k, v in vit.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    assert detect_format(path) == "timm"
    model, warned = caught(MissingDecoderWarning, load_pretrained, path, num_heads=TINY.num_heads)
    assert len(warned) == 1 and "head.weight" in str(warned[0].message)
    assert model.encoder.pos_embed.requires_grad  # timm's table is learned (trunc-normal init)
    x = images(TINY)
    with torch.no_grad():
        assert_close_rel(model.encode(x), vit.forward_features(x))

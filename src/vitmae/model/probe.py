"""The official MAE linear probe as modules: BatchNorm1d(affine=False, eps 1e-6) and a Linear layer
(trunc_normal std 0.01) on a frozen encoder's pooled feature, and the probe folded into one ViTClassifier."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .classifier import ViTClassifier, pool_features
from .config import ModelConfig
from .flat_names import flat_state_dict, load_flat_state_dict
from .vit import ViTEncoder

__all__ = ["FrozenEncoderProbe", "LinearProbe", "frozen", "probe_to_classifier"]


def frozen(module: nn.Module) -> nn.Module:
    """`module` in eval mode with no parameter trained."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class LinearProbe(nn.Module):
    """BatchNorm1d without affine parameters, then Linear: the official probe head."""

    def __init__(self, dim: int, num_classes: int, config: ModelConfig):
        super().__init__()
        self.config = config  # the encoder's, so that checkpoints record what the features came from
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.01)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: Tensor) -> Tensor:
        return self.head(self.bn(features))


class FrozenEncoderProbe(nn.Module):
    """Images -> frozen encoder (always in eval mode) -> pooled feature -> probe."""

    def __init__(self, encoder: ViTEncoder, probe: LinearProbe, pool: str):
        super().__init__()
        self.encoder, self.probe, self.pool = frozen(encoder), probe, pool
        self.config = probe.config

    def train(self, mode: bool = True) -> "FrozenEncoderProbe":
        super().train(mode)
        self.encoder.eval()
        return self

    def forward(self, images: Tensor) -> Tensor:
        with torch.no_grad():
            features = pool_features(self.encoder.encode(images), self.pool, self.encoder.num_prefix_tokens)
        return self.probe(features.float())


def probe_to_classifier(encoder: ViTEncoder, probe: LinearProbe) -> ViTClassifier:
    """One ViTClassifier (cls token, final norm, head) equal to encoder + BatchNorm (eval) + Linear on the
    cls token: the normalisation is folded into the head, W' = W / sigma, b' = b - W' mu."""
    model = ViTClassifier(encoder.config, probe.head.out_features, "token")
    encoder_keys = ("cls_token", "pos_embed", "patch_embed.", "blocks.", "norm.")
    state = {k: v for k, v in flat_state_dict(encoder).items() if k.startswith(encoder_keys)}
    sigma = (probe.bn.running_var + probe.bn.eps).sqrt()
    weight = probe.head.weight / sigma
    state["head.weight"] = weight.detach().clone()
    state["head.bias"] = (probe.head.bias - weight @ probe.bn.running_mean).detach().clone()
    load_flat_state_dict(model, state)
    return model.eval()

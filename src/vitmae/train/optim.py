"""Optimizer parameter groups and the learning-rate schedule of the official recipes."""
from __future__ import annotations

import math
from collections.abc import Callable, Collection

import torch
from torch import nn

from ..model.vit import flat_named_parameters


def param_groups(model: nn.Module, weight_decay: float, layer_id: Callable[[str], int] | None = None,
                 layer_decay: float = 1.0, num_layers: int = 0, no_decay: Collection[str] = ()) -> list[dict]:
    """No weight decay on biases, 1-D parameters (norms) and the parameters named in `no_decay` (flat
    state-dict names, as the official code's), as the official code; frozen parameters are left out. With `layer_id`, each group also gets
    `lr_scale = layer_decay ** (num_layers - id)` (layer-wise lr decay for fine-tuning)."""
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in flat_named_parameters(model):
        if not param.requires_grad:
            continue
        exempt = param.ndim <= 1 or name.endswith(".bias") or name in no_decay
        layer = layer_id(name) if layer_id else num_layers
        group = groups.setdefault((layer, exempt), {
            "params": [], "weight_decay": 0.0 if exempt else weight_decay,
            "lr_scale": layer_decay ** (num_layers - layer),
        })
        group["params"].append(param)
    return list(groups.values())


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], device: torch.device
                ) -> torch.optim.AdamW:
    # The fused kernel is the fastest on GPUs; foreach is the fast path elsewhere.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **fast)


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0) -> float:
    """Per-step linear warmup, then half-cycle cosine to `min_lr` (official `adjust_learning_rate`).
    `step` counts optimizer steps from 1."""
    if step <= warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)

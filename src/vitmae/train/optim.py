"""The optimizer and the learning-rate schedule of the official recipes (parameter groups: model.vit)."""
from __future__ import annotations

import math

import torch


def build_adamw(groups: list[dict], lr: float, betas: tuple[float, float], device: torch.device
                ) -> torch.optim.AdamW:
    # The fused kernel is the fastest on GPUs; foreach is the fast path elsewhere.
    fast = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(groups, lr=lr, betas=betas, **fast)


# ViTDet's step schedule: the learning rate times 0.1 at these fractions of the run (its 100-epoch
# recipe: epochs 88.9 and 96.3), after the same linear warm-up.
STEP_MILESTONES = (8 / 9, 26 / 27)
POLY_POWER = 1.0  # mmsegmentation's PolyLR in its MAE / UperNet recipes


def lr_at(step: int, base_lr: float, total_steps: int, warmup_steps: int, min_lr: float = 0.0,
          schedule: str = "cosine") -> float:
    """Per-step linear warmup, then half-cycle cosine to `min_lr` (official `adjust_learning_rate`); or
    with `schedule="step"` the base rate divided by 10 at each of STEP_MILESTONES (`min_lr` unused); or
    with `schedule="poly"` mmsegmentation's PolyLR over the steps after the warm-up, (base - min_lr) *
    (1 - t / T) ** POLY_POWER + min_lr. `step` counts optimizer steps from 1."""
    if step <= warmup_steps:
        return base_lr * step / max(1, warmup_steps)
    if schedule == "step":
        return base_lr * 0.1 ** sum(step > round(m * total_steps) for m in STEP_MILESTONES)
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "poly":
        return min_lr + (base_lr - min_lr) * (1.0 - progress) ** POLY_POWER
    return min_lr + (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)

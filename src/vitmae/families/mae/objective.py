"""The objective of masked-autoencoder pre-training."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ...data import Batch
from ...data.transforms import mix_seed
from ...model import Patching, make_noise


class MAEObjective:
    """Masked-patch reconstruction loss; the mask noise of each micro-batch is keyed by
    (seed, step, micro-batch, rank), so a resumed run masks exactly as the uninterrupted one."""

    def __init__(self, mask_ratio: float, masking: str, patch_size: int | tuple[int, ...], seed: int, rank: int):
        self.mask_ratio, self.masking, self.patching = mask_ratio, masking, Patching(patch_size)
        self.seed, self.rank = seed, rank

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        images = batch.images
        grid = self.patching.grid_of(images)
        generator = torch.Generator().manual_seed(mix_seed(self.seed, step, micro, self.rank))
        noise = make_noise(self.masking, len(images), grid, self.mask_ratio, generator)
        noise = noise.to(images.device, non_blocking=True)  # a copy queued behind the step, not a sync
        return model(images, mask_ratio=self.mask_ratio, noise=noise).loss

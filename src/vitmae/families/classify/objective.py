"""The objective of training a classifier (fine-tuning, the linear probe)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...data import Batch
from ...data.augment import seeded_global_rngs
from ...data.transforms import mix_seed


class ClassificationObjective:
    """Cross-entropy with label smoothing, or soft-target cross-entropy on mixup / cutmix batches (of images
or clips: cutmix pastes the same box in every frame, as VideoMAE's fine-tuning does)."""

    def __init__(self, num_classes: int, smoothing: float, mixup: float, cutmix: float, seed: int, rank: int = 0):
        self.smoothing, self.seed, self.rank = smoothing, seed, rank
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                               label_smoothing=smoothing, num_classes=num_classes)

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        images, labels = batch.images, batch.targets
        if self.mixup is None:
            return F.cross_entropy(model(images), labels, label_smoothing=self.smoothing)
        if len(images) % 2:  # timm's batch mixing pairs each sample with its mirror: needs an even count
            images, labels = images[:-1], labels[:-1]
        with seeded_global_rngs(mix_seed(self.seed, step, micro, self.rank)):
            # a clip's frames as channels, so that cutmix's box cuts rows and columns of every frame
            mixed, targets = self.mixup(images.flatten(1, -3), labels)
            images = mixed.view(images.shape)
        return torch.sum(-targets * F.log_softmax(model(images).float(), dim=-1), dim=-1).mean()

"""The objective of semantic segmentation."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ....data import Batch
from ....data.augment import seeded_global_rngs
from ....data.transforms import mix_seed
from ....model.segmentation import AUX_WEIGHT


class SegmentationObjective:
    """Cross-entropy over the labeled pixels, plus 0.4 x the auxiliary head's. Dropout and drop path draw
    from torch's global generator seeded by (seed, step, micro-batch, rank), so a resumed run draws as the
    uninterrupted one (however many loaders were started in between)."""

    def __init__(self, ignore_index: int, seed: int, rank: int = 0):
        self.ignore_index, self.seed, self.rank = ignore_index, seed, rank

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        with seeded_global_rngs(mix_seed(self.seed, step, micro, self.rank)):
            out = model(batch.images)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(logits.float(), batch.targets, ignore_index=self.ignore_index)
        if aux is not None:
            loss = loss + AUX_WEIGHT * F.cross_entropy(aux.float(), batch.targets, ignore_index=self.ignore_index)
        return loss

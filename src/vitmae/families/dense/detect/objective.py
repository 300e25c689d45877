"""The objective of object detection (and instance segmentation)."""
from __future__ import annotations

from torch import Tensor, nn

from ....data import Batch


class DetectionObjective:
    """The sum of torchvision's detection losses (RPN objectness and boxes, RoI classes and boxes, masks)."""

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        return sum(model(list(batch.images), batch.targets).values())

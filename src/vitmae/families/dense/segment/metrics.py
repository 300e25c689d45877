"""Semantic-segmentation metrics as mmsegmentation computes them (`mmseg.evaluation.metrics.IoUMetric`).

Per class, over the whole evaluation set: the pixels where prediction and label agree (intersection),
the pixels predicted or labeled as it (union) and the pixels labeled as it. Pixels labeled with the ignore
index count nowhere. Then IoU_c = intersection / union and Acc_c = intersection / labeled; mIoU and mAcc
average them over the classes where they are defined (union, resp. label count, > 0); aAcc = all
intersections / all labeled pixels. Sums, not per-image means, so the result does not depend on how the
set is batched.

Classes with no labeled pixel in the set (`empty_classes`, mmseg's NaN) have Acc None, and IoU None unless
predicted (then 0, as mmseg's); `pixels` gives every class's labeled pixels, so such a class is plain to see.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

__all__ = ["SegmentationMetrics"]


class SegmentationMetrics:
    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.reset()

    def reset(self) -> None:
        # (intersection, union, labeled) per class; int64: a pixel count overflows nothing
        self.areas = torch.zeros(3, self.num_classes, dtype=torch.int64)

    def update(self, prediction: Tensor, label: Tensor) -> None:
        """Add a batch: class indices of the same shape (any), the label possibly holding the ignore index."""
        if prediction.shape != label.shape:
            raise ValueError(f"prediction {tuple(prediction.shape)} and label {tuple(label.shape)} differ in shape")
        n = self.num_classes
        prediction, label = prediction.long().cpu().flatten(), label.long().cpu().flatten()
        keep = (label != self.ignore_index) & (label >= 0) & (label < n)  # as mmseg's histc over [0, n)
        prediction, label = prediction[keep], label[keep]
        intersection = torch.bincount(label[prediction == label], minlength=n)
        predicted = torch.bincount(prediction[(prediction >= 0) & (prediction < n)], minlength=n)
        labeled = torch.bincount(label, minlength=n)
        self.areas += torch.stack([intersection, predicted + labeled - intersection, labeled])

    def compute(self, class_names: list[str] | None = None) -> dict[str, Any]:
        """{mIoU, mAcc, aAcc} in percent, per class {name: {IoU, Acc}} (None where undefined), the labeled
        pixels of each class {name: count} and the classes without one [name, ...]."""
        intersection, union, labeled = self.areas.double()
        iou = torch.where(union > 0, intersection / union.clamp(min=1), torch.nan)
        acc = torch.where(labeled > 0, intersection / labeled.clamp(min=1), torch.nan)
        names = class_names or [str(c) for c in range(self.num_classes)]
        return {
            "mIoU": _percent(iou.nanmean()), "mAcc": _percent(acc.nanmean()),
            "aAcc": _percent(intersection.sum() / labeled.sum()) if labeled.sum() > 0 else None,
            "per_class": {name: {"IoU": _percent(i), "Acc": _percent(a)} for name, i, a in zip(names, iou, acc)},
            "pixels": dict(zip(names, self.areas[2].tolist())),
            "empty_classes": [name for name, count in zip(names, self.areas[2].tolist()) if count == 0],
        }


def _percent(value: Tensor) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(100 * value, 4)

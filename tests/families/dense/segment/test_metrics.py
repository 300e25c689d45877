"""mmseg-style segmentation metrics against torchmetrics and a case computed by hand."""
from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from vitmae.families.dense.segment import SegmentationMetrics


def test_a_case_by_hand():
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 255]])
    prediction = torch.tensor([[0, 1, 1, 1], [0, 2, 3, 0]])  # the ignored pixels' predictions count nowhere
    metrics = SegmentationMetrics(num_classes=4)
    metrics.update(prediction, label)
    result = metrics.compute(["a", "b", "c", "d"])
    # a: 1 of union {0,1,4} -> 1/3; b: 2 of {1,2,3} -> 2/3; c: 1 of {4,5} -> 1/2; d: never seen -> undefined
    assert result["per_class"]["a"] == {"IoU": pytest.approx(100 / 3, abs=1e-3), "Acc": 50.0}
    assert result["per_class"]["b"] == {"IoU": pytest.approx(200 / 3, abs=1e-3), "Acc": 100.0}
    assert result["per_class"]["c"] == {"IoU": 50.0, "Acc": 50.0}
    assert result["per_class"]["d"] == {"IoU": None, "Acc": None}
    assert result["mIoU"] == pytest.approx(50.0, abs=1e-3)  # mean of the three defined classes
    assert result["mAcc"] == pytest.approx(200 / 3, abs=1e-3)
    assert result["aAcc"] == pytest.approx(100 * 4 / 6, abs=1e-3)


def test_equals_torchmetrics_summed_over_batches():
    generator = torch.Generator().manual_seed(0)
    n = 6
    labels = torch.randint(0, n, (5, 2, 17, 13), generator=generator)
    labels[labels == 5] = 255  # class 5 never labeled: predicted only, IoU 0 in both
    labels[:, :, :3] = 255
    predictions = torch.where(torch.rand(labels.shape, generator=generator) < 0.6, labels.clamp(max=n - 1),
                              torch.randint(0, n, labels.shape, generator=generator))
    ours = SegmentationMetrics(n)
    jaccard = MulticlassJaccardIndex(n, average="none", ignore_index=255)
    accuracy = MulticlassAccuracy(n, average="none", ignore_index=255)
    overall = MulticlassAccuracy(n, average="micro", ignore_index=255)
    for prediction, label in zip(predictions, labels):  # five batches, summed
        ours.update(prediction, label)
        for metric in (jaccard, accuracy, overall):
            metric.update(prediction, label)
    result = ours.compute()
    iou, acc = jaccard.compute(), accuracy.compute()
    for c in range(n):
        assert result["per_class"][str(c)]["IoU"] == pytest.approx(100 * iou[c].item(), abs=1e-3)
        if c != 5:
            assert result["per_class"][str(c)]["Acc"] == pytest.approx(100 * acc[c].item(), abs=1e-3)
    assert result["per_class"]["5"]["Acc"] is None
    assert result["mIoU"] == pytest.approx(100 * iou.mean().item(), abs=1e-3)
    assert result["mAcc"] == pytest.approx(100 * acc[:5].mean().item(), abs=1e-3)
    assert result["aAcc"] == pytest.approx(100 * overall.compute().item(), abs=1e-3)


def test_shapes_must_match():
    with pytest.raises(ValueError, match="differ in shape"):
        SegmentationMetrics(3).update(torch.zeros(2, 3), torch.zeros(3, 2))


def test_the_labeled_pixels_of_each_class_and_the_classes_without_one():
    """Issue 25: a class with no ground truth in the set is listed, with every class's labeled pixels."""
    metrics = SegmentationMetrics(num_classes=3)
    metrics.update(torch.tensor([[0, 2, 0, 0]]), torch.tensor([[0, 0, 255, 1]]))
    result = metrics.compute(["background", "object", "other"])
    assert result["pixels"] == {"background": 2, "object": 1, "other": 0}
    assert result["empty_classes"] == ["other"]
    assert result["per_class"]["other"] == {"IoU": 0.0, "Acc": None}  # predicted, never labeled: as mmseg

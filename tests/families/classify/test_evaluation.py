"""How a classifier is measured: the confusion matrix, per-class precision / recall / F1 and top-k
accuracy, by hand."""
from __future__ import annotations

import pytest
import torch

from vitmae.families.classify import confusion_matrix, per_class_metrics
from vitmae.families.features import topk_accuracy


def test_metrics_by_hand():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    preds = torch.tensor([0, 1, 0, 1, 0, 2, 2, 1, 0, 0])  # class 3 is never predicted
    cm = confusion_matrix(preds, labels, 4)
    assert cm.tolist() == [[2, 1, 0, 0], [1, 1, 0, 0], [1, 1, 2, 0], [1, 0, 0, 0]]
    rows = per_class_metrics(cm, ["a", "b", "c", "d"])
    # class a: tp 2, predicted 5, actual 3; b: tp 1, predicted 3, actual 2; c: tp 2, predicted 2, actual 4
    expected = [(2 / 5, 2 / 3), (1 / 3, 1 / 2), (2 / 2, 2 / 4), (0.0, 0.0)]
    for row, (p, r) in zip(rows, expected):
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        assert row["precision"] == pytest.approx(100 * p) and row["recall"] == pytest.approx(100 * r)
        assert row["f1"] == pytest.approx(100 * f1)
    assert [row["support"] for row in rows] == [3, 2, 4, 1]
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0]])
    assert topk_accuracy(logits, torch.tensor([1, 2, 0]), ks=(1, 2, 5)) == {
        "top1": 0.0, "top2": pytest.approx(200 / 3), "top5": 100.0}

"""Weighted kNN on real encoders, standalone and during pre-training. (The vote itself:
tests/families/test_features.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import TINY_MODEL_FLAGS
from vitmae.data import FashionMNISTSource


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("fmnist")
    source = FashionMNISTSource("test")
    for split, offset, count in (("train", 0, 20), ("val", 20, 6)):
        for c in range(10):
            (root / split / f"c{c}").mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(source.labels == c)[offset:offset + count]):
                Image.fromarray(source.images[i]).save(root / split / f"c{c}" / f"{j}.png")
    return root


def test_pretrain_reports_knn_and_knn_cli_on_trained_and_random_encoders(run_cli, tmp_path, folder):
    run = tmp_path / "pretrain"
    run_cli("pretrain", *TINY_MODEL_FLAGS, "--data", "fashion-mnist", "--batch-size", "16", "--num-workers", "0",
            "--heldout-samples", "16", "--epochs", "1", "--max-steps", "4", "--eval-knn", folder, "--output", run)
    m = json.loads((run / "metrics.json").read_text())
    assert [h["step"] for h in m["knn_history"]] == [0, 4]  # before training and at the end
    assert m["knn_bank_images"] == 200 and m["knn_query_images"] == 60
    assert 0 <= m["knn_top1_start"] <= 100 and 0 <= m["knn_top1_end"] <= 100
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))

    results = {}
    for name, checkpoint in (("trained", run), ("random", "none")):
        out = tmp_path / f"knn-{name}"
        flags = ["--model", "mae_vit_micro_patch4_28"] if checkpoint == "none" else []
        result = run_cli("knn", "--checkpoint", checkpoint, *flags, "--data", folder, "--labels-per-class", "10",
                         "--k", "5", "--temperature", "0.1", "--num-workers", "0", "--output", out)
        assert "kNN (k=5" in result.stdout
        results[name] = json.loads((out / "metrics.json").read_text())
    for r in results.values():
        assert r["k"] == 5 and r["temperature"] == 0.1 and r["train_images"] == 100 and r["val_images"] == 60
        assert 10 < r["top1"] <= r["top5"] <= 100  # above chance: Fashion-MNIST pixels already cluster
    assert results["trained"]["feature_dim"] == 32 and results["random"]["feature_dim"] == 128

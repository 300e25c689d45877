"""Transfer of a video encoder through the image commands: `finetune`, `evaluate`, `linprobe`, `knn` and
`embed` on labeled clips, VideoMAE's multi-view test, flips off where a mirror changes the label."""
from __future__ import annotations

import json

import numpy as np

import pytest
import torch

import vitmae
from tests.tasks.test_pretrain_video import MICRO

pytestmark = pytest.mark.usefixtures("one_thread")

CLIPS = ["--data", "moving-fashion-mnist", "--clips", "40", "--num-workers", "0"]  # 40 training clips, 8 held out


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    from vitmae.cli import main

    out = tmp_path_factory.mktemp("video") / "pretrain"
    assert main(["pretrain", *MICRO, *CLIPS, "--batch-size", "4", "--heldout-samples", "4", "--max-steps", "2",
                 "--output", str(out)]) == 0
    return out


def test_finetuning_on_clips_and_evaluating_its_views(pretrained, run_cli, tmp_path):
    out = tmp_path / "finetune"
    result = run_cli("finetune", "--checkpoint", pretrained, *CLIPS, "--batch-size", "8", "--max-steps", "3",
                     "--epochs", "1", "--test-clips", "2", "--test-crops", "3", "--output", out)
    assert ("augmentation for 16-frame clips of 32x32 with 1 channel(s): crops of 0.8-1 of the area, flip 0 (a "
            "mirror changes the label)") in result.stdout
    assert "on moving-fashion-mnist (val split) (8 videos)" in result.stdout and "clips/s" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_views"] == [2, 3] and metrics["frame_interval"] == 1 and metrics["num_classes"] == 8
    assert metrics["classes"][:2] == ["east", "north-east"]
    model = vitmae.load_classifier(out / "checkpoints" / "best")
    assert model.config.is_video and model(torch.zeros(2, 1, 16, 32, 32)).shape == (2, 8)

    evaluated = run_cli("evaluate", "--checkpoint", out, "--clips", "40", "--test-clips", "2", "--test-crops", "3",
                        "--output", tmp_path / "eval")
    assert "on 8 videos (2 clip(s) x 3 crop(s) each)" in evaluated.stdout
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["top1"] == metrics["best_top1"]  # the views it was validated on, read back the same


def test_the_label_decides_the_classes_and_the_flips(pretrained, run_cli, tmp_path):
    result = run_cli("finetune", "--checkpoint", pretrained, *CLIPS, "--clip-label", "class", "--batch-size", "8",
                     "--max-steps", "1", "--epochs", "1", "--output", tmp_path / "class")
    assert "flip 0.5," in result.stdout  # a mirrored item is the same item
    assert json.loads((tmp_path / "class" / "metrics.json").read_text())["num_classes"] == 10


def test_multi_view_logits_average_the_views():
    from vitmae.families.classify.evaluation import view_logits

    torch.manual_seed(0)
    head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 2 * 4 * 4, 3))
    views = torch.randn(5, 6, 2, 2, 4, 4)  # 5 videos x 6 views of (C, T, H, W)
    expected = torch.stack([head(views[i]).mean(0) for i in range(5)])
    assert torch.allclose(view_logits(head, views), expected, atol=1e-6)
    assert torch.equal(view_logits(head, views[:, 0]), head(views[:, 0]))


def test_the_frozen_encoder_commands_read_clips(pretrained, run_cli, tmp_path):
    knn = run_cli("knn", "--checkpoint", pretrained, *CLIPS, "--test-crops", "3", "--output", tmp_path / "knn")
    assert "(8 videos), bank of 40 labeled videos" in knn.stdout
    for cache in ("--cache-features", "--no-cache-features"):
        probe = run_cli("linprobe", "--checkpoint", pretrained, *CLIPS, cache, "--batch-size", "8", "--max-steps", "2",
                        "--output", tmp_path / f"probe{cache}")
        assert "(8 videos), 40 labeled training videos" in probe.stdout
    classifier = vitmae.load_classifier(tmp_path / "probe--cache-features" / "classifier")
    assert classifier.config.is_video and classifier.num_classes == 8
    run_cli("embed", "--checkpoint", pretrained, *CLIPS, "--split", "val", "--output", tmp_path / "embed")
    features = np.load(tmp_path / "embed" / "embeddings.npy")
    assert features.shape == (8, 32) and np.isfinite(features).all()
    rows = (tmp_path / "embed" / "embeddings.csv").read_text().splitlines()
    assert rows[0] == "index,path,label" and len(rows) == 9 and all(r.split(",")[2] != "-1" for r in rows[1:])

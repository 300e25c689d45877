"""`vitmae evaluate`: accuracy, per-class precision / recall / F1 checked by hand, the confusion picture; a
segmentation run measured again as it measured itself. (Detection runs: tests/tasks/test_detect.py; the
metrics themselves: tests/families/classify/test_evaluation.py.)"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from vitmae.config import ModelConfig
from vitmae.data import EvalTransform, FashionMNISTSource, default_normalization, load_image
from vitmae.interop import export_classifier, load_classifier
from vitmae.model import MaskedAutoencoder
from vitmae.model.classifier import from_pretrained_encoder
from vitmae.tasks.evaluate import EvaluateOptions, evaluate

TINY = ModelConfig(img_size=28, patch_size=4, in_chans=1, embed_dim=32, depth=1, num_heads=2,
                   decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=2)


pytestmark = pytest.mark.usefixtures("one_thread")


def test_evaluate_cli_report_matches_a_manual_computation(run_cli, tmp_path):
    source = FashionMNISTSource("test")
    counts = {"c0": 7, "c1": 4, "c2": 5}
    for c, (name, count) in enumerate(counts.items()):
        (tmp_path / "data" / "val" / name).mkdir(parents=True)
        for j, i in enumerate(np.flatnonzero(source.labels == c)[:count]):
            Image.fromarray(source.images[i]).save(tmp_path / "data" / "val" / name / f"{j}.png")
    torch.manual_seed(0)
    model = from_pretrained_encoder(MaskedAutoencoder(TINY), 3, "avg")
    with torch.no_grad():
        model.head.weight.normal_(std=3.0)  # varied predictions, so every metric is exercised
    checkpoint = export_classifier(model, tmp_path / "clf", "vitmae").parent

    out = tmp_path / "eval"
    result = run_cli("evaluate", "--checkpoint", checkpoint, "--data", tmp_path / "data", "--num-workers", "0",
                     "--batch-size", "5", "--output", out)
    assert "macro F1" in result.stdout and "top-5" not in result.stdout  # 3 classes: top-5 is trivially 100%
    report = json.loads((out / "metrics.json").read_text())
    png = Image.open(out / "confusion_matrix.png")
    assert png.format == "PNG" and png.width > 200

    # By hand: predictions of the reloaded classifier on the same images, then counts.
    clf = load_classifier(checkpoint)
    transform = EvalTransform(28, *default_normalization(1, None))
    paths = sorted((tmp_path / "data" / "val").rglob("*.png"))
    truth = [int(p.parent.name[1]) for p in paths]
    with torch.no_grad():
        predicted = clf(torch.stack([transform(load_image(p, 1)) for p in paths])).argmax(dim=1).tolist()
    assert report["images"] == len(paths) == 16
    assert report["top1"] == pytest.approx(100 * sum(p == t for p, t in zip(predicted, truth)) / 16)
    assert report["top5"] is None  # three classes
    for c, row in enumerate(report["per_class"]):
        tp = sum(p == c and t == c for p, t in zip(predicted, truth))
        n_pred, n_true = predicted.count(c), truth.count(c)
        precision = tp / n_pred if n_pred else 0.0
        recall = tp / n_true
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        assert row["class"] == f"c{c}" and row["support"] == n_true
        assert row["precision"] == pytest.approx(100 * precision)
        assert row["recall"] == pytest.approx(100 * recall) and row["f1"] == pytest.approx(100 * f1)
    assert sum(map(sum, report["confusion_matrix"])) == 16
    assert len(set(predicted)) > 1


def test_evaluate_a_finetune_run_uses_its_best_checkpoint_or_the_last(run_cli, tmp_path):
    """A fine-tuning run directory stands for the weights of its best epoch, as the run reported them;
    --which last takes its last checkpoint."""
    from tests.tasks.test_finetune import write_image_folder

    folder = write_image_folder(tmp_path / "data", train_per_class=3, val_per_class=2)
    torch.manual_seed(0)
    checkpoint = export_classifier(from_pretrained_encoder(MaskedAutoencoder(TINY), 10, "avg"), tmp_path / "init",
                                   "vitmae").parent
    run = tmp_path / "ft"
    run_cli("finetune", "--checkpoint", checkpoint, "--data", folder, "--epochs", "4", "--batch-size", "6",
            "--warmup-epochs", "1", "--blr", "0.02", "--num-workers", "0", "--output", run)
    history = json.loads((run / "metrics.json").read_text())
    for which, expected, top1 in (("best", run / "checkpoints" / "best", history["best_top1"]),
                                  ("last", run / "checkpoints" / "step-00000020", history["top1"])):
        out = tmp_path / f"eval-{which}"
        result = run_cli("evaluate", "--checkpoint", run, "--which", which, "--data", folder, "--num-workers", "0",
                         "--output", out)
        report = json.loads((out / "metrics.json").read_text())
        assert report["checkpoint_evaluated"] == str(expected) and str(expected) in result.stdout
        assert report["top1"] == pytest.approx(top1) and report["top5"] is not None  # ten classes
        assert "top-5" in result.stdout
    result = run_cli("evaluate", "--checkpoint", run, "--which", "first", "--output", tmp_path / "x", check=False)
    assert result.returncode == 2 and "unknown --which 'first'; choose from: best, last" in result.stderr


def test_evaluate_a_segmentation_run_as_it_measured_itself(learned_segmentation_run, run_cli, tmp_path):
    """On the run's own validation scenes: --which last gives the run's final metrics, best its best mIoU."""
    run = learned_segmentation_run
    summary = json.loads((run / "metrics.json").read_text())
    result = run_cli("evaluate", "--checkpoint", run, "--which", "last", "--output", tmp_path / "last", "--device",
                     "cpu", "--num-workers", "0")
    report = json.loads((tmp_path / "last" / "metrics.json").read_text())
    assert report["run"] == "segment" and report["images"] == 64 and report["data"] == "fashion-scenes"
    assert report["checkpoint_evaluated"] == str(run / "checkpoints" / "step-00000060")
    for key in ("mIoU", "mAcc", "aAcc", "per_class"):
        assert report[key] == summary[key], key
    assert f"mIoU {summary['mIoU']}" in result.stdout
    best = evaluate(EvaluateOptions(checkpoint=str(run), output=str(tmp_path / "best"), device="cpu", num_workers=0))
    assert best["checkpoint_evaluated"] == str(run / "checkpoints" / "best")
    assert best["mIoU"] == summary["best"]["mIoU"]


def test_evaluate_with_tta_reports_single_scale_and_tta_scores_side_by_side(learned_segmentation_run, run_cli,
                                                                            detection_run, tmp_path):
    run = learned_segmentation_run
    summary = json.loads((run / "metrics.json").read_text())
    result = run_cli("evaluate", "--checkpoint", run, "--which", "last", "--tta", "--output", tmp_path / "tta",
                     "--device", "cpu", "--num-workers", "0")
    report = json.loads((tmp_path / "tta" / "metrics.json").read_text())
    for key in ("mIoU", "mAcc", "aAcc", "per_class"):
        assert report[key] == summary[key], key  # the single-scale scores, unchanged
    tta = report["tta"]
    assert tta["scales"] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75] and tta["flip"] is True
    assert 0 <= tta["mIoU"] <= 100 and set(tta["per_class"]) == set(summary["per_class"])
    assert f"mIoU {summary['mIoU']}" in result.stdout
    assert f"with test-time augmentation (flips, scales 0.5, 0.75, 1, 1.25, 1.5, 1.75): mIoU {tta['mIoU']}" \
        in result.stdout
    result = run_cli("evaluate", "--checkpoint", detection_run, "--tta", "--output", tmp_path / "detect", check=False)
    assert result.returncode == 2 and "--tta is not for a detect model; it takes: segment" in result.stderr

"""Issue 25 at the task level: hand-made binary masks (0/255 PNGs, two classes named) stop `vitmae segment` in
one line with the hint; `--binary-masks` learns the object; `evaluate` and `predict` read the masks as the
run did; a validation split without the object is reported as an empty class."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.tasks.binary_masks import write_binary_masks
from vitmae.cli import main
from vitmae.data.segmentation import map_mask_values, read_index_mask
from vitmae.families.dense.segment import SegmentationMetrics

TINY = ["--checkpoint", "none", "--embed-dim", "32", "--depth", "2", "--num-heads", "2", "--crop-size", "32",
        "--num-workers", "0", "--device", "cpu"]


def segment(data: Path, output: Path, *flags: str) -> int:
    return main(["segment", "--data", str(data), *TINY, "--output", str(output), *flags])


@pytest.fixture(scope="module")
def binary_run(tmp_path_factory) -> Path:
    """10 epochs with --binary-masks on 8 training and 4 validation images (a few seconds)."""
    root = tmp_path_factory.mktemp("binary")
    data = write_binary_masks(root / "data")
    assert segment(data, root / "run", "--binary-masks", "--epochs", "10", "--batch-size", "4", "--lr", "2e-3",
                   "--warmup-epochs", "0.5") == 0
    return root / "run"


def test_binary_masks_without_the_option_stop_in_one_line_with_the_hint(tmp_path, capsys, one_thread):
    data = write_binary_masks(tmp_path / "data")
    assert segment(data, tmp_path / "run", "--max-steps", "1") == 2
    assert capsys.readouterr().err.splitlines() == [
        "vitmae segment: error: training masks hold only 0 and 255 (8 files) and classes.txt names 2 classes: 255 "
        "is the ignore index, so 'object' (1) would get no pixels; pass --binary-masks to read 255 as class 1, or "
        "--ignore-index to choose another"]
    assert not (tmp_path / "run").exists()


def test_binary_masks_and_mask_values_are_one_or_the_other(tmp_path, capsys):
    data = write_binary_masks(tmp_path / "data", train=1, val=1)
    assert segment(data, tmp_path / "run", "--binary-masks", "--mask-values", "0,255") == 2
    assert capsys.readouterr().err.splitlines() == [
        "vitmae segment: error: give --binary-masks or --mask-values, not both (--binary-masks is --mask-values "
        "0,255)"]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_binary_masks_learn_the_object_and_are_recorded(binary_run):
    summary = json.loads((binary_run / "metrics.json").read_text())
    record = json.loads((binary_run / "segmenter.json").read_text())
    assert summary["mask_values"] == record["mask_values"] == [0, 255]
    pixels = summary["pixels"]
    assert pixels["object"] > 0 and summary["empty_classes"] == []
    all_background = 100 * pixels["background"] / (pixels["background"] + pixels["object"]) / 2  # its mIoU
    assert summary["per_class"]["object"]["IoU"] > 0 and summary["mIoU"] > all_background + 10


@pytest.mark.slow
def test_evaluate_and_predict_read_the_masks_as_the_run_did(binary_run, tmp_path, one_thread):
    summary = json.loads((binary_run / "metrics.json").read_text())
    assert main(["evaluate", "--checkpoint", str(binary_run), "--which", "last", "--device", "cpu",
                 "--num-workers", "0", "--output", str(tmp_path / "eval")]) == 0
    evaluated = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert evaluated["mIoU"] == summary["mIoU"] and evaluated["pixels"] == summary["pixels"]

    data = Path(json.loads((binary_run / "segmenter.json").read_text())["data"])
    assert main(["predict", str(data / "val" / "images"), "--checkpoint", str(binary_run), "--which", "last",
                 "--device", "cpu", "--num-workers", "0", "--out", str(tmp_path / "predict")]) == 0
    metrics = SegmentationMetrics(2)
    for mask_file in sorted((data / "val" / "masks").iterdir()):
        predicted = read_index_mask(str(tmp_path / "predict" / "masks" / mask_file.name))
        truth = map_mask_values(read_index_mask(str(mask_file)), [0, 255])
        metrics.update(torch.from_numpy(predicted), torch.from_numpy(truth))
    assert metrics.compute(["background", "object"])["mIoU"] == summary["mIoU"]


@pytest.mark.slow
def test_a_resume_keeps_the_mask_values(binary_run, tmp_path, capsys):
    data = json.loads((binary_run / "segmenter.json").read_text())["data"]
    assert segment(Path(data), binary_run, "--no-binary-masks", "--mask-values", "0,128", "--epochs", "10", "--batch-size", "4",
                   "--lr", "2e-3", "--warmup-epochs", "0.5", "--resume", str(binary_run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--mask-values [0, 128] (the run has None)" in err
    assert "--binary-masks False (the run has True)" in err


def test_an_all_background_validation_split_is_reported(tmp_path, caplog, one_thread):
    data = write_binary_masks(tmp_path / "data", train=4, val=2, val_objects=False)
    with caplog.at_level(logging.WARNING):
        assert segment(data, tmp_path / "run", "--binary-masks", "--max-steps", "2", "--batch-size", "2") == 0
    line = "1 of the 2 classes has no pixel in the validation masks: 'object' (1)"
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(line) == 2  # after the scan, and at the one evaluation
    summary = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert summary["empty_classes"] == ["object"] and summary["pixels"]["object"] == 0
    assert summary["per_class"]["object"]["Acc"] is None

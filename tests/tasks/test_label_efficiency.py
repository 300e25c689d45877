"""The label-efficiency experiment end to end at its smoke-test scale, through the real CLI."""
from __future__ import annotations

import json

import pytest

from vitmae.config import ConfigError, LabelEfficiencyConfig
from vitmae.tasks.label_efficiency import SCALES, fit_batch, label_efficiency, parse_fractions, schedule_for


pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_scale_runs_end_to_end_and_writes_its_report(run_cli, tmp_path):
    out = tmp_path / "le"
    result = run_cli("label-efficiency", "--scale", "tiny", "--num-workers", "0", "--output", out)
    assert "report:" in result.stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["scale"] == "tiny" and m["train_images"] == 400 and m["test_images"] == 200
    assert [row["labels"] for row in m["table_top1"]] == [40, 400]
    for row in m["table_top1"]:
        assert set(row) == {"fraction", "labels", "finetune_mae", "finetune_scratch", "linprobe_mae", "knn_mae",
                            "linprobe_mae_mean", "knn_mae_mean"}
        assert all(0 <= row[k] <= 100 for k in row if k not in ("fraction", "labels"))
    runs = m["runs"]["0.1"]
    assert runs["finetune_mae"]["train_images"] == runs["knn_mae"]["train_images"] == 40
    assert runs["finetune_scratch"]["init"] == "scratch" and runs["finetune_mae"]["init"].endswith("pretrain")
    assert runs["knn_mae"]["pool"] == "cls" and runs["knn_mae_mean"]["pool"] == "mean"
    assert runs["linprobe_mae"]["pool"] == "cls" and runs["linprobe_mae_mean"]["pool"] == "mean"
    assert runs["finetune_mae"]["steps"] == runs["finetune_scratch"]["steps"]  # the same budget
    assert m["pretrain"]["steps"] == 4
    report = (out / "report.md").read_text()
    assert "| labels | fraction |" in report and "fine-tune, MAE init" in report and "Hardware:" in report
    assert "label-efficiency --scale tiny" in report
    assert (out / "accuracy_vs_labels.png").stat().st_size > 0 and (out / "pretraining.png").stat().st_size > 0

    # Run again: every finished sub-run is reused, so it only rewrites the report.
    again = label_efficiency(LabelEfficiencyConfig(output=str(out), scale="tiny", num_workers=0))
    assert again["table_top1"] == m["table_top1"] and again["stage_times_s"] == {}


def test_scale_helpers():
    assert parse_fractions("1,0.01, 0.1") == [0.01, 0.1, 1.0]
    with pytest.raises(ConfigError):
        parse_fractions("0,0.5")
    assert fit_batch(256, 600) == 128 and fit_batch(256, 60000) == 256 and fit_batch(16, 20) == 8
    assert schedule_for(SCALES["cpu"].finetune_epochs, 0.02) == SCALES["cpu"].finetune_epochs[0.01]
    for scale in SCALES.values():
        assert set(parse_fractions(scale.fractions)) <= set(scale.finetune_epochs)
    with pytest.raises(ConfigError, match="unknown scale"):
        label_efficiency(LabelEfficiencyConfig(scale="huge"))

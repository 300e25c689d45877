"""The label-efficiency experiment (experiments/label_efficiency.py, on the public API) end to end at its
smoke-test scale, through its command line."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from vitmae.config import ConfigError

from ..conftest import ROOT

SCRIPT = ROOT / "experiments" / "label_efficiency.py"
sys.path.insert(0, str(SCRIPT.parent))  # as running the script does: it imports experiment_tools beside it
_spec = importlib.util.spec_from_file_location("label_efficiency", SCRIPT)
experiment = sys.modules["label_efficiency"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiment)
SCALES, LabelEfficiencyOptions = experiment.SCALES, experiment.LabelEfficiencyOptions
label_efficiency, fit_batch = experiment.label_efficiency, experiment.fit_batch
parse_fractions, schedule_for = experiment.parse_fractions, experiment.schedule_for


def run_script(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True,
                            timeout=600, env=env, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_tiny_scale_runs_end_to_end_and_writes_its_report(tmp_path):
    out = tmp_path / "le"
    result = run_script("--scale", "tiny", "--num-workers", "0", "--output", out)
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
    assert "label_efficiency.py --scale tiny" in report
    assert (out / "accuracy_vs_labels.png").stat().st_size > 0 and (out / "pretraining.png").stat().st_size > 0

    # Run again: every finished sub-run is reused, so it only rewrites the report.
    again = label_efficiency(LabelEfficiencyOptions(output=str(out), scale="tiny", num_workers=0))
    assert again["table_top1"] == m["table_top1"] and again["stage_times_s"] == {}


def test_scale_helpers():
    assert parse_fractions("1,0.01, 0.1") == [0.01, 0.1, 1.0]
    with pytest.raises(ConfigError):
        parse_fractions("0,0.5")
    assert fit_batch(256, 600) == 128 and fit_batch(256, 60000) == 256 and fit_batch(16, 20) == 8
    assert schedule_for(SCALES["cpu"].finetune_epochs, 0.02) == SCALES["cpu"].finetune_epochs[0.01]
    for scale in SCALES.values():
        assert set(parse_fractions(scale.fractions)) <= set(scale.finetune_epochs)
    with pytest.raises(ConfigError, match="unknown --scale"):
        label_efficiency(LabelEfficiencyOptions(scale="huge"))

"""The dense-transfer experiment (experiments/dense_transfer.py, on the public API) end to end at its
smoke-test scale, through its command line (in-process)."""
from __future__ import annotations

import importlib.util
import json
import sys

import pytest

from ..conftest import ROOT

SCRIPT = ROOT / "experiments" / "dense_transfer.py"
sys.path.insert(0, str(SCRIPT.parent))  # as running the script does: it imports experiment_tools beside it
_spec = importlib.util.spec_from_file_location("dense_transfer", SCRIPT)
experiment = sys.modules["dense_transfer"] = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(experiment)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_tiny_scale_runs_every_transfer_per_seed_and_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "dt"
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    [row] = m["table"]
    assert row["labeled"] == 8 and row["seeds"] == [0, 1]
    runs = ("segment_mae", "segment_scratch", "probe_mae", "probe_random", "detect_mae", "detect_scratch")
    assert set(row) == {"labeled", "seeds", "leads", *runs}
    by_seed = m["runs"]["8"]
    for name in runs:  # each cell is its seeds' mean, and their sample standard deviation
        metric = "box_AP" if name.startswith("detect") else "mIoU"
        values = [by_seed[seed][name]["box"]["AP"] if metric == "box_AP" else by_seed[seed][name]["mIoU"]
                  for seed in ("seed0", "seed1")]
        assert row[name][metric]["per_seed"] == values
        assert row[name][metric]["mean"] == pytest.approx(sum(values) / 2)
        assert row[name][metric]["sd"] == pytest.approx(abs(values[0] - values[1]) / 2 ** 0.5)
    lead = row["leads"]["UperNet: MAE - scratch, mIoU"]["per_seed"]
    assert lead == [pytest.approx(by_seed[s]["segment_mae"]["mIoU"] - by_seed[s]["segment_scratch"]["mIoU"])
                    for s in ("seed0", "seed1")]
    seed0, seed1 = by_seed["seed0"]["segment_mae"], by_seed["seed1"]["segment_mae"]
    assert seed0["train_images"] == seed1["train_images"] == 8 and seed0["val_images"] == 16
    assert (out / "n8" / "seed1" / "segment_mae" / "metrics.json").is_file()
    assert by_seed["seed0"]["segment_scratch"]["init"] == "none" and seed0["init"].endswith("pretrain")
    assert by_seed["seed0"]["probe_random"]["init"].endswith("random_init.safetensors")
    assert by_seed["seed0"]["detect_mae"]["steps"] == seed0["steps"] == 3  # the same budget for every run
    report = (out / "report.md").read_text()
    assert "| 8 |" in report and " ± " in report and "MAE's lead, seed by seed" in report
    # a second call reuses every finished run: nothing is trained again
    capsys.readouterr()
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    assert "[dense-transfer]" not in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["table"] == m["table"]

    # a lever of the pre-training: its own pre-training and MAE runs, the baselines taken from the first
    lever = tmp_path / "mask50"
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--tasks", "segment", "--mask-ratio", "0.5",
                            "--baselines-from", str(out), "--output", str(lever)]) == 0
    trained = capsys.readouterr().out
    assert "pre-training" in trained and "segment_mae 8 seed 1" in trained and "probe_mae 8 seed 0" in trained
    assert "scratch" not in trained and "probe_random" not in trained
    lm = json.loads((lever / "metrics.json").read_text())
    assert lm["model"]["mask_ratio"] == 0.5 and "mask_ratio: 0.5" in (lever / "pretrain" / "config.yaml").read_text()
    assert lm["runs"]["8"]["seed1"]["segment_scratch"] == by_seed["seed1"]["segment_scratch"]
    assert "Scratch and frozen-random runs: those of" in (lever / "report.md").read_text()
    # baselines it does not have (another label budget) are an error before anything is trained
    assert experiment.main(["--scale", "tiny", "--labeled", "4", "--baselines-from", str(out),
                            "--output", str(tmp_path / "none")]) == 2
    assert "no finished run n4/seed0/segment_scratch" in capsys.readouterr().err
    # nor are those of other scenes (another --seed draws them)
    assert experiment.main(["--scale", "tiny", "--seed", "1", "--baselines-from", str(out),
                            "--output", str(tmp_path / "none")]) == 2
    assert "--seed 1 (the seed that draws the scenes)" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


@pytest.mark.parametrize("flag, value", [("--labeled", "ten"), ("--labeled", "0"), ("--tasks", "classify"),
                                         ("--seeds", "-1"), ("--seeds", "a,b"), ("--baselines-from", "nowhere")])
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag, value):
    assert experiment.main(["--scale", "tiny", flag, value, "--output", str(tmp_path / "dt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

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
def test_tiny_scale_runs_every_transfer_and_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "dt"
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [row["labeled"] for row in m["table"]] == [8, 16]
    for row in m["table"]:
        assert set(row) == {"labeled", "segment_mae", "segment_scratch", "probe_mae", "probe_random", "detect_mae",
                            "detect_scratch"}
        assert all(0 <= row[k]["mIoU"] <= 100 for k in ("segment_mae", "probe_random"))
    runs = m["runs"]["8"]
    assert runs["segment_mae"]["train_images"] == 8 and runs["segment_mae"]["val_images"] == 16
    assert runs["segment_scratch"]["init"] == "none" and runs["segment_mae"]["init"].endswith("pretrain")
    assert runs["probe_random"]["init"].endswith("random_init.safetensors")
    assert runs["detect_mae"]["steps"] == runs["segment_mae"]["steps"] == 3  # the same budget for every run
    assert "| 8 |" in (out / "report.md").read_text()
    # a second call reuses every finished run: nothing is trained again
    capsys.readouterr()
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    assert "[dense-transfer]" not in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["table"] == m["table"]


@pytest.mark.parametrize("flag, value", [("--labeled", "ten"), ("--labeled", "0"), ("--tasks", "classify")])
def test_bad_options_are_one_line_errors(tmp_path, capsys, flag, value):
    assert experiment.main(["--scale", "tiny", flag, value, "--output", str(tmp_path / "dt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

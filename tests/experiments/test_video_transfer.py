"""experiments/video_transfer.py at its tiny scale: every run, the controls and the report, and a second
call that reuses them."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments"))
import video_transfer as experiment  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.slow
def test_tiny_scale_runs_every_transfer_and_reuses_finished_runs(tmp_path, capsys):
    out = tmp_path / "vt"
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert [row["labeled_per_class"] for row in m["table"]] == [2, 4]
    names = {"direction_mae", "direction_scratch", "class_mae", "class_scratch", "probe_tube",
             "probe_random_masking", "probe_random_init"}
    for row in m["table"]:
        assert set(row) == {"labeled_per_class"} | names and all(0 <= row[k]["top1"] <= 100 for k in names)
    assert set(m["controls"]) == {"labeled_per_class", "ordered", "repeated", "shuffled"}
    assert m["pretrain"]["tube"]["target"]["mask_type"] == "tube"
    assert m["pretrain"]["random"]["target"]["mask_type"] == "random"
    run = json.loads((out / "n2" / "direction_scratch" / "metrics.json").read_text())
    assert run["train_images"] == 2 * 8 and run["init"] == "scratch" and run["steps"] == 2
    assert json.loads((out / "n4" / "class_mae" / "metrics.json").read_text())["num_classes"] == 10
    report = (out / "report.md").read_text()
    assert "## Fine-tuning, direction (chance 12.5%)" in report and "| one frame, repeated |" in report
    capsys.readouterr()  # a second call reuses every finished run and the controls: nothing is trained again
    assert experiment.main(["--scale", "tiny", "--num-workers", "0", "--output", str(out)]) == 0
    assert "[video-transfer]" not in capsys.readouterr().out


def test_bad_label_counts_are_one_line_errors(tmp_path, capsys):
    assert experiment.main(["--scale", "tiny", "--labeled", "ten", "--output", str(tmp_path / "vt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

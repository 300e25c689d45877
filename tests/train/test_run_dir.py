"""A run writes only where it was told and resumes only the run it was given; a resume refuses options that
change the run's meaning and notes a changed schedule. Through the real CLI, in-process."""
import json

import pytest
import yaml

from vitmae.cli import main
from tests.conftest import TINY_MODEL_FLAGS

FAST = [*TINY_MODEL_FLAGS, "--data", "fashion-mnist", "--batch-size", "8", "--num-workers", "0",
        "--heldout-samples", "8", "--epochs", "1"]


def pretrain(*args, capsys):
    code = main(["pretrain", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def run(tmp_path, capsys, one_thread):
    """A finished 2-step run."""
    run = tmp_path / "run"
    code, _, err = pretrain(*FAST, "--max-steps", "2", "--output", run, capsys=capsys)
    assert code == 0, err
    return run


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "step/s" not in line and "it/s" not in line]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_fresh_run_refuses_a_previous_run_and_overwrite_replaces_it(run, capsys):
    before = (run / "metrics.jsonl").read_text()
    code, _, err = pretrain(*FAST, "--max-steps", "1", "--output", run, capsys=capsys)
    assert code == 2 and f"--resume {run}" in one_error_line(err) and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == before  # nothing appended, nothing pruned
    assert (run / "checkpoints" / "latest").read_text().strip() == "step-00000002"

    (run / "notes.txt").write_text("mine")
    (run / "predictions").mkdir()  # a segmentation run's pictures: the new run's report must not show them
    (run / "predictions" / "epoch-001.png").write_bytes(b"old")
    code, _, err = pretrain(*FAST, "--max-steps", "1", "--output", run, "--overwrite", capsys=capsys)
    assert code == 0, err
    assert not (run / "predictions").exists()
    assert [p.name for p in (run / "checkpoints").glob("step-*")] == ["step-00000001"]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    assert (run / "notes.txt").read_text() == "mine"  # only a run's own files are removed


def test_a_non_empty_folder_that_is_not_a_run_is_refused(tmp_path, capsys, one_thread):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"not touched")
    code, _, err = pretrain(*FAST, "--max-steps", "1", "--output", folder, capsys=capsys)
    assert code == 2 and "is not empty (cat.jpg)" in one_error_line(err)
    assert [p.name for p in folder.iterdir()] == ["cat.jpg"]


def test_resume_with_a_config_file_writes_into_the_resumed_run(run, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where the default --output (runs/pretrain) would land
    config = tmp_path / "more.yaml"
    config.write_text("max_steps: 3\n")
    code, _, err = pretrain("--resume", run, "--config", config, capsys=capsys)
    assert code == 0, err
    assert not (tmp_path / "runs").exists()
    assert json.loads((run / "metrics.json").read_text())["steps"] == 3
    assert yaml.safe_load((run / "config.yaml").read_text())["max_steps"] == 3


@pytest.mark.parametrize("flag, value", [("--batch-size", "4"), ("--mask-ratio", "0.5"), ("--embed-dim", "64"),
                                         ("--schedule", "step"), ("--seed", "1")])
def test_resume_refuses_an_option_that_changes_the_run(run, capsys, flag, value):
    code, _, err = pretrain("--resume", run, flag, value, "--max-steps", "3", capsys=capsys)
    line = one_error_line(err)
    assert code == 2 and f"{flag} " in line and "(the run has" in line
    assert json.loads((run / "metrics.json").read_text())["steps"] == 2  # untouched


def test_resume_with_more_epochs_says_how_the_schedule_continues(run, capsys):
    code, _, err = pretrain("--resume", run, "--epochs", "2", "--max-steps", "3", capsys=capsys)
    assert code == 0, err
    note = next(line for line in err.splitlines() if line.startswith("note: --epochs 2"))
    # Fashion-MNIST's 60,000 images in steps of 8: 7,500 steps an epoch
    assert "schedule now spans 15000 steps instead of 7500" in note and "from step 3 the learning rate" in note


def test_resume_on_another_number_of_processes_is_refused(run, capsys):
    """As a 2-process run resumed on one would be (its checkpoint re-saved as such, manifest and all)."""
    import torch

    from vitmae.interop.vitmae_format import write_manifest

    ckpt = run / "checkpoints" / "step-00000002"
    state = torch.load(ckpt / "train_state.pt", weights_only=True)
    torch.save({**state, "world_size": 2}, ckpt / "train_state.pt")
    write_manifest(ckpt)
    code, _, err = pretrain("--resume", run, "--max-steps", "3", capsys=capsys)
    assert code == 2 and "trained on 2 process(es), this is 1" in one_error_line(err)

"""Checkpoints: a manifest verified on load, the fallback to the newest intact checkpoint, one-line errors
for damaged or hostile files, a full disk, a killed data-loading worker."""
import json
import os
import pickle
import signal
import subprocess
from pathlib import Path

import pytest
import torch

from vitmae.interop.safe_load import CheckpointError
from vitmae.train import DiskFullError, Trainer, WorkerLostError
from vitmae.train.checkpoint import TRAIN_STATE_KEYS, load_checkpoint, save_checkpoint
from tests.train.test_engine import TINY, tiny_setup


@pytest.fixture
def three_checkpoints(tmp_path, one_thread):
    """A run with checkpoints after steps 1, 2 and 3 (all kept)."""
    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=3, save_every_steps=1, keep_checkpoints=0)
    Trainer(model, objective, dataset, cfg).fit()
    return tmp_path / "run"


def flip_byte(path: Path, offset_from_end: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[-offset_from_end] ^= 0xFF  # inside the tensor data: safetensors' own header check cannot see it
    path.write_bytes(bytes(data))


def test_every_checkpoint_has_a_manifest_of_its_files(three_checkpoints):
    ckpt = three_checkpoints / "checkpoints" / "step-00000003"
    manifest = json.loads((ckpt / "manifest.json").read_text())["files"]
    assert set(manifest) == {"model.safetensors", "config.json", "train_state.pt"}
    assert all(manifest[name]["bytes"] == (ckpt / name).stat().st_size for name in manifest)
    weights, state, loaded, notes = load_checkpoint(three_checkpoints)
    assert loaded == ckpt and notes == [] and state["progress"]["step"] == 3


@pytest.mark.parametrize("damage", ["flipped weights", "truncated state", "empty weights", "missing state"])
def test_resume_falls_back_to_the_newest_intact_checkpoint_and_says_why(three_checkpoints, damage):
    latest = three_checkpoints / "checkpoints" / "step-00000003"
    if damage == "flipped weights":
        flip_byte(latest / "model.safetensors")
    elif damage == "truncated state":
        data = (latest / "train_state.pt").read_bytes()
        (latest / "train_state.pt").write_bytes(data[: len(data) // 2])
    elif damage == "empty weights":
        (latest / "model.safetensors").write_bytes(b"")
    else:
        (latest / "train_state.pt").unlink()
    weights, state, ckpt, notes = load_checkpoint(three_checkpoints)
    assert ckpt.name == "step-00000002" and state["progress"]["step"] == 2
    assert len(notes) == 2 and "step-00000003" in notes[0] and "step-00000002" in notes[1]
    reason = {"flipped weights": "SHA-256", "truncated state": "truncated", "empty weights": "truncated",
              "missing state": "train_state.pt"}[damage]
    assert reason in notes[0]


def test_no_intact_checkpoint_is_one_error_naming_each(three_checkpoints):
    for ckpt in (three_checkpoints / "checkpoints").glob("step-*"):
        flip_byte(ckpt / "model.safetensors")
    with pytest.raises(CheckpointError, match="no intact checkpoint.*step-00000003.*step-00000001") as err:
        load_checkpoint(three_checkpoints)
    assert "\n" not in str(err.value)


def test_a_hostile_train_state_is_refused_in_one_line_without_running(tmp_path, run_cli, three_checkpoints):
    """A pickle that would run code, in a checkpoint without a manifest (as an older vitmae wrote them, or
    an attacker who removed it): `--resume` refuses it through the safe reader."""
    class RunsCode:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    for ckpt in (three_checkpoints / "checkpoints").glob("step-*"):
        (ckpt / "manifest.json").unlink()
        (ckpt / "train_state.pt").write_bytes(pickle.dumps({"progress": RunsCode()}))
    result = run_cli("pretrain", "--resume", three_checkpoints, check=False)
    assert result.returncode == 2, result.stderr
    assert "refused to load" in result.stderr and "weights_only" not in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "pwned").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB file system (tmpfs; needs root and mount rights, else the test is skipped)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root and mount rights)")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


@pytest.mark.parametrize("when", ["known before writing", "found while writing"])
def test_a_full_disk_is_one_error_and_leaves_the_previous_checkpoint(small_disk, when):
    from vitmae.model import MaskedAutoencoder
    from vitmae.config import PretrainOptions

    model = MaskedAutoencoder(PretrainOptions(**TINY).model_config())
    state = {**dict.fromkeys(TRAIN_STATE_KEYS, {}), "progress": {"step": 1}}
    save_checkpoint(small_disk, "step-1", model, state)
    # the size check counts tensors; bytes it cannot see are only found when the disk fills up
    extra = {"optimizer": {"big": torch.zeros(200_000)}} if when == "known before writing" else {
        "extra": {"blob": b"x" * 900_000}}
    with pytest.raises(DiskFullError, match="no space left to save checkpoint step-2.*step-1.*intact"):
        save_checkpoint(small_disk, "step-2", model, {**state, **extra, "progress": {"step": 2}})
    root = small_disk / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-1"]  # no .tmp-step-2 left
    assert load_checkpoint(small_disk)[1]["progress"]["step"] == 1


class KillsItsWorker(torch.utils.data.Dataset):
    """A dataset whose worker process is killed (as the OOM killer would) when it reaches `index`."""

    def __init__(self, dataset, index):
        self.dataset, self.index = dataset, index

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        if i == self.index:
            os.kill(os.getpid(), signal.SIGKILL)
        return self.dataset[i]


def test_a_killed_worker_saves_the_last_step_and_says_how_to_resume(tmp_path, one_thread):
    from torch.utils.data import Subset

    cfg, model, dataset, objective = tiny_setup(tmp_path, max_steps=6, num_workers=1)
    dataset = Subset(dataset, range(64))  # 8 steps of 8 an epoch
    sampler_order = __import__("vitmae.data", fromlist=["EpochSampler"]).EpochSampler(64, cfg.seed, True, 0, 1)
    sampler_order.set_epoch(0)
    fatal = list(sampler_order)[8 * 3]  # the first image of step 4
    trainer = Trainer(model, objective, KillsItsWorker(dataset, fatal), cfg)
    with pytest.raises(WorkerLostError) as err:
        trainer.fit()
    message = str(err.value)
    assert "killed by signal" in message and "--resume" in message and "\n" not in message
    _, state, ckpt, _ = load_checkpoint(tmp_path / "run")
    assert 1 <= state["progress"]["step"] <= 3 and str(ckpt) in message

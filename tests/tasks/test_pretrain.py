"""End-to-end pre-training runs through the real CLI, on the real built-in data."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file

from tests.conftest import ROOT, TINY_MODEL_FLAGS, kill_when_saved

FAST = [*TINY_MODEL_FLAGS, "--data", "fashion-mnist", "--batch-size", "16", "--num-workers", "0",
        "--heldout-samples", "16", "--log-every-steps", "2", "--epochs", "1"]


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(run_dir / "checkpoints" / latest / "model.safetensors")


def test_pretrain_writes_metrics_checkpoint_pictures(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("pretrain", *FAST, "--max-steps", "6", "--output", out)
    assert "held-out masked-patch loss" in result.stdout
    lines = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert [l["step"] for l in lines] == [2, 4, 6]
    assert set(lines[0]) >= {"step", "epoch", "loss", "lr", "img_s"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["skipped_files"] == [] and metrics["strategy"] == "none"
    for key in ("heldout_loss_start", "heldout_loss_end", "heldout_loss_baseline"):
        assert metrics[key] > 0
    assert "test split" in metrics["heldout"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["max_steps"] == 6 and config["data"] == "fashion-mnist"
    assert (out / "checkpoints" / "step-00000006" / "model.safetensors").exists()
    grid = Image.open(out / "reconstructions" / "final.png")
    assert grid.width > 4 * 28 and grid.height > 8 * 28
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


def test_resume_after_sigkill_is_bit_identical(run_cli, tmp_path):
    # every checkpoint kept, and steps enough after the 4th that the run is still training when the test sees
    # it: on a fast CPU, 4 tiny steps take milliseconds, and a pruned step-00000004 was never seen
    steps = ["--max-steps", "30", "--save-every-steps", "2", "--keep-checkpoints", "0"]
    run_cli("pretrain", *FAST, *steps, "--output", tmp_path / "whole")

    killed = tmp_path / "killed"
    kill_when_saved(["pretrain", *FAST, *steps, "--output", killed], killed / "checkpoints" / "step-00000004")
    assert not (killed / "metrics.json").exists()

    run_cli("pretrain", "--resume", killed)  # everything else comes from the run's config.yaml
    a, b = weights(tmp_path / "whole"), weights(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    resumed = json.loads((killed / "metrics.json").read_text())
    assert resumed["steps"] == 30
    whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    assert resumed["heldout_loss_start"] == whole["heldout_loss_start"]
    assert resumed["heldout_loss_end"] == whole["heldout_loss_end"]


def test_sigterm_saves_and_exits_cleanly(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "vitmae", "pretrain", *FAST, "--max-steps", "100000",
                             "--output", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    latest = (out / "checkpoints" / "latest").read_text().strip()
    assert int(latest.split("-")[1]) >= 2
    assert (out / "checkpoints" / latest / "train_state.pt").exists()


def test_unreadable_images_are_skipped_and_listed(run_cli, tmp_path):
    data = tmp_path / "images" / "some_class"
    data.mkdir(parents=True)
    rng = torch.Generator().manual_seed(0)
    for i in range(40):
        pixels = (torch.rand(40, 36, 3, generator=rng) * 255).to(torch.uint8).numpy()
        Image.fromarray(pixels).save(data / f"img{i:02d}.png")
    (data / "empty.jpg").write_bytes(b"")
    (data / "notes.png").write_text("this is not an image")
    good = (data / "img00.png").read_bytes()
    (data / "truncated.png").write_bytes(good[: len(good) // 2])
    out = tmp_path / "run"
    result = run_cli("pretrain", *TINY_MODEL_FLAGS, "--data", tmp_path / "images", "--img-size", "32",
                     "--patch-size", "8", "--in-chans", "3", "--batch-size", "8", "--num-workers", "2",
                     "--epochs", "2", "--heldout-samples", "8", "--output", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted(Path(s["path"]).name for s in metrics["skipped_files"]) == ["empty.jpg", "notes.png", "truncated.png"]
    assert metrics["steps"] == 2 * (43 // 8)
    assert "TRAINING images" in metrics["heldout"]
    assert "skipped 3 unreadable" in result.stdout


def test_config_file_and_flags(run_cli, tmp_path):
    config = tmp_path / "pretrain.yaml"
    config.write_text("max-steps: 2\nbatch_size: 8\nmask_ratio: 0.5\nlog_every_steps: 1\n")
    out = tmp_path / "run"
    run_cli("pretrain", *FAST, "--config", config, "--max-steps", "3", "--output", out)
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["max_steps"] == 3  # the flag wins over the file
    assert saved["batch_size"] == 16  # FAST's flag wins over the file too
    assert saved["mask_ratio"] == 0.5  # from the file
    assert json.loads((out / "metrics.json").read_text())["model"]["mask_ratio"] == 0.5


@pytest.mark.parametrize("args,message", [
    (["--precision", "fp64"], "unknown --precision"),
    (["--model", "mae_vit_gigantic"], "unknown --model"),
    (["--data", "/nonexistent/folder"], "/nonexistent/folder"),
    (["--epochs", "many"], "invalid int value"),
    (["--img-size", "30"], "not divisible by patch_size"),
    (["--config", "/nonexistent.yaml"], "does not exist"),
])
def test_bad_options_are_one_line_and_exit_2(run_cli, tmp_path, args, message):
    result = run_cli("pretrain", "--output", tmp_path / "run", "--max-steps", "1", *args, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_pretrain_with_grad_checkpointing_trains(tmp_path):
    from vitmae.cli import main

    out = tmp_path / "run"
    assert main(["pretrain", *FAST, "--grad-checkpointing", "--max-steps", "4", "--viz-every-epochs", "0",
                 "--output", str(out)]) == 0
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["grad_checkpointing"] is True
    losses = [json.loads(l)["loss"] for l in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert json.loads((out / "metrics.json").read_text())["steps"] == 4


@pytest.mark.slow
def test_two_process_ddp_on_cpu(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29533", "-m", "vitmae", "pretrain", *FAST, "--max-steps", "4",
                             "--output", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 4 and metrics["strategy"] == "ddp"
    assert metrics["effective_batch_size"] == 32 and metrics["images"] == 4 * 32
    assert len(list((out / "checkpoints").glob("step-*"))) == 1  # one writer


def test_ddp_goes_on_when_one_rank_draws_only_unreadable_images(tmp_path):
    """Batches of one image: rank 1's second micro-batch is an unreadable file, so that rank has nothing
    to train on while rank 0 waits for its gradients. It steps on its previous batch with a zero loss
    instead of leaving rank 0 waiting forever."""
    from vitmae.data import EpochSampler, FashionMNISTSource, ImageFolderSource

    folder = tmp_path / "images"
    folder.mkdir()
    source = FashionMNISTSource("test")
    for i in range(12):
        source[i][0].save(folder / f"{i:02d}.png")
    paths = ImageFolderSource(folder, in_chans=1).paths
    second_on_rank_1 = EpochSampler(len(paths), seed=0, rank=1, world_size=2).rank_indices()[1]
    Path(paths[second_on_rank_1]).write_bytes(b"not an image")
    out = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29534", "-m", "vitmae", "pretrain", *TINY_MODEL_FLAGS,
                             "--data", str(folder), "--batch-size", "1", "--num-workers", "0",
                             "--heldout-samples", "4", "--viz-every-epochs", "0", "--max-steps", "4",
                             "--output", str(out)], env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert [f["path"] for f in metrics["skipped_files"]] == [paths[second_on_rank_1]]


def test_pretrain_streams_webdataset_shards(run_cli, tmp_path):
    import io
    import tarfile

    from vitmae.data import FashionMNISTSource

    source = FashionMNISTSource("test")
    for shard in range(2):
        with tarfile.open(tmp_path / f"train-{shard:06d}.tar", "w") as tar:
            for i in range(24):
                img, label = source[shard * 24 + i]
                for ext, payload in (("png", _png_bytes(img)), ("cls", str(label).encode())):
                    info = tarfile.TarInfo(f"{shard:02d}{i:04d}.{ext}")
                    info.size = len(payload)
                    tar.addfile(info, io.BytesIO(payload))
    out = tmp_path / "run"
    pattern = str(tmp_path / "train-{000000..000001}.tar")
    run_cli("pretrain", *FAST, "--data", pattern, "--samples-per-epoch", "48", "--epochs", "2",
            "--num-workers", "2", "--output", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 2 * (48 // 16) and metrics["images"] == 96
    assert "TRAINING images" in metrics["heldout"]


def _png_bytes(img) -> bytes:
    import io

    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_runs(run_cli, tmp_path, precision):
    out = tmp_path / "run"
    run_cli("pretrain", *FAST, "--max-steps", "2", "--precision", precision, "--device", "cpu", "--output", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["precision"] == precision and metrics["steps"] == 2
    assert metrics["heldout_loss_end"] > 0

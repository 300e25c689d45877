"""Reconstructions of clips: `vitmae reconstruct` with a video model.

A frames grid (one column per time slice, the first frame of each tubelet; for each clip four rows: the
clip, its visible tubelets, the reconstruction, the reconstruction with the visible tubelets pasted back)
and an animation (GIF or WebP) of every frame: the clip, its visible tubelets and the pasted
reconstruction side by side. What a norm-pix model's picture adds back is said under it, as for images
(`--denorm`: each removed tubelet's true mean and std, or those of its visible neighbours in space and
time).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from ..data import DataError, UnreadableImage
from ..data.clips import ClipSampling, EvalClips, frame_interval
from ..data.video_decode import open_video
from ..errors import ConfigError
from ..model import MaskedAutoencoder
from ..model.config import MASK_TYPES
from .reconstruction import (Reconstruction, Stats, panel_grid, reconstruct_masked, reconstruction_panels,
                             save_reconstruction_grid)

ANIMATIONS = ("gif", "webp", "none")
FRAME_MS = 125  # 8 frames a second


def load_clips(paths: Sequence[str | Path], model: MaskedAutoencoder, mean: Stats, std: Stats,
               interval: int | None = None) -> tuple[Tensor, int]:
    """(the centre clip of each video file or frame folder, (N, C, T, H, W), the frame interval: given,
    or sized from the videos as training sizes it)."""
    config = model.config
    for path in paths:
        if not Path(path).exists():
            raise FileNotFoundError(f"video {path} does not exist")

    def opened(path: str | Path):
        try:
            return open_video(path, config.in_chans)
        except UnreadableImage as err:
            raise DataError(f"cannot read video {err}") from None

    interval, _ = frame_interval([(opened(p), -1) for p in paths], config.num_frames, interval)
    view = EvalClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std)
    try:
        return torch.stack([view(opened(p))[0] for p in paths]), interval
    except UnreadableImage as err:
        raise DataError(f"cannot read video {err}") from None


def animation_frames(rec: Reconstruction, mean: Stats, std: Stats) -> list[Image.Image]:
    """One picture per frame: for each clip a row of the clip, its visible tubelets and the pasted
    reconstruction."""
    frames = []
    for t in range(rec.original.shape[2]):
        still = Reconstruction(rec.original[:, :, t], rec.mask[:, :, t], rec.reconstruction[:, :, t],
                               rec.pasted[:, :, t], rec.loss, rec.denormalised, rec.denorm)
        headers, columns = reconstruction_panels(still, mean, std)
        frames.append(panel_grid([columns[0], columns[1], columns[3]], [f"frame {t}", headers[1], headers[3]]))
    return frames


def save_animation(frames: list[Image.Image], path: Path) -> Path:
    """An endlessly looping GIF or WebP (by `path`'s suffix) of `frames`."""
    first, *rest = [frame.convert("RGB") for frame in frames]
    first.save(path, save_all=True, append_images=rest, duration=FRAME_MS, loop=0,
               **({"lossless": True} if path.suffix == ".webp" else {}))
    return path


def reconstruct_clip_files(model: MaskedAutoencoder, mean: Stats, std: Stats, name: str,
                           videos: Sequence[str | Path], out: str | Path, mask_ratio: float | None = None,
                           masking: str | None = None, seed: int = 0, denorm: str = "true",
                           interval: int | None = None, animation: str = "gif") -> list[Path]:
    """`vitmae reconstruct` of a video model (`load_for_viewing`'s; `name` heads the picture): the frames
    grid at `out` (PNG) and, unless `animation` is none, the animation beside it (OUT.gif or OUT.webp).
    Returns the files written."""
    if animation not in ANIMATIONS:
        raise ConfigError(f"unknown --animation {animation!r}; choose from: {', '.join(ANIMATIONS)}")
    masking = masking or model.config.mask_type
    if masking not in MASK_TYPES:
        raise ConfigError(f"--masking {masking}: a video model's is one of {', '.join(MASK_TYPES)}")
    clips, interval = load_clips(videos, model, mean, std, interval)
    rec = reconstruct_masked(model, clips, mask_ratio, masking, seed, None, denorm)
    title = (f"{name}: {masking} masking, seed {seed}, frames {interval} apart, "
             f"masked-tubelet loss {rec.loss:.4f}")
    out = Path(out)
    written = [save_reconstruction_grid(rec, out, mean, std, title, tubelet=model.config.tubelet_size)]
    if animation != "none":
        written.append(save_animation(animation_frames(rec, mean, std), out.with_suffix(f".{animation}")))
    return written


__all__ = ["ANIMATIONS", "animation_frames", "load_clips", "reconstruct_clip_files", "save_animation"]

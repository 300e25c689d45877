"""Pre-training data of a video model: clips with the recipe's crops and flips, and the fixed held-out
clips a run is watched on."""
from __future__ import annotations

import torch
from torch import Tensor

from ...data import UnreadableImage, open_source
from ...data.clips import ClipDataset, ClipSampling, EvalClips, TrainClips
from ...data.moving_fashion import MOVING_FASHION
from ...data.source import DataError, require_readable
from ...model import ModelConfig
from ..encoder import normalization

# VideoMAE's sampling rate on Kinetics; shorter videos get the largest interval at which a clip fits.
MAX_FRAME_INTERVAL = 4
PROBED_VIDEOS = 8  # videos whose length sizes the default interval


def frame_interval(source, num_frames: int, given: int | None) -> tuple[int, str | None]:
    """(the interval, the line that says how it was chosen; None when given): the largest interval up to
    VideoMAE's 4 at which a clip of `num_frames` fits the shortest of the first videos."""
    if given is not None:
        return given, None
    lengths = []
    for index in range(min(len(source), PROBED_VIDEOS)):
        try:
            video, _ = source[index]
        except UnreadableImage:
            continue
        lengths.append(video.num_frames)
        video.close()
    if not lengths:
        raise DataError(f"none of the first {min(len(source), PROBED_VIDEOS)} videos is readable")
    shortest = min(lengths)
    interval = max(1, min(MAX_FRAME_INTERVAL, (shortest - 1) // max(1, num_frames - 1)))
    return interval, (f"frame interval {interval}: {num_frames} frames {interval} apart fit the shortest of the "
                      f"first {len(lengths)} videos ({shortest} frames); --frame-interval sets it")


def pretrain_clips(data: str, config: ModelConfig, crop_min_scale: float, seed: int, interval: int | None,
                   repeat: int):
    """(source, dataset, mean, std, interval, the line on how it was sized) of video pre-training: `repeat`
    clips a video, each its own random start, resized crop and flip, normalised."""
    source = open_source(data, "train", "clip", in_chans=config.in_chans)
    mean, std = normalization(config, data)
    interval, line = frame_interval(source, config.num_frames, interval)
    transform = TrainClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std,
                           scale=(crop_min_scale, 1.0), repeat=repeat)
    return source, ClipDataset(source, transform, seed), mean, std, interval, line


def heldout_clips(data: str, val_data: str | None, train, config: ModelConfig, count: int, interval: int,
                  mean, std) -> tuple[Tensor, str]:
    """(a fixed sample of `count` held-out clips (N, C, T, H, W), their description): the centre clip and
    crop of videos spread evenly over --val-data, the built-in clips' validation split, or else (said
    plainly) the training videos."""
    if val_data or data == MOVING_FASHION:
        spec = val_data or data
        source, description = open_source(spec, "val", "clip", in_chans=config.in_chans), f"{spec} (held out)"
    else:
        source, description = train, f"{data} (a fixed sample of TRAINING clips: no --val-data given)"
    view = EvalClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std)
    clips: list[Tensor] = []
    reasons: list[str] = []
    n = len(source)
    for index in sorted({int(i * n / min(count, n)) for i in range(min(count, n))}):
        try:
            video, _ = source[index]
            clips.append(view(video)[0])
        except UnreadableImage as err:
            reasons.append(err.reason)
    require_readable(len(clips), "the held-out sample", reasons)
    return torch.stack(clips), description

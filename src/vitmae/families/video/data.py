"""Pre-training data of a video model: clips with the recipe's crops and flips, and the fixed held-out
clips a run is watched on."""
from __future__ import annotations

import torch
from torch import Tensor

from ...data import UnreadableImage, build_dataset, open_source
from ...data.clips import ClipSampling, EvalClips, TrainClips, frame_interval
from ...data.moving_fashion import MOVING_FASHION
from ...data.source import require_readable
from ...model import ModelConfig
from ..encoder import normalization

def pretrain_clips(data: str, config: ModelConfig, crop_min_scale: float, seed: int, interval: int | None,
                   repeat: int, clips: int | None = None):
    """(source, dataset, mean, std, interval, the line on how it was sized) of video pre-training: `repeat`
    clips a video, each its own random start, resized crop and flip, normalised."""
    source = open_source(data, "train", "clip", in_chans=config.in_chans, clips=clips)
    mean, std = normalization(config, data)
    interval, line = frame_interval(source, config.num_frames, interval)
    transform = TrainClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std,
                           scale=(crop_min_scale, 1.0), repeat=repeat)
    return source, build_dataset(source, transform, seed), mean, std, interval, line


def heldout_clips(data: str, val_data: str | None, train, config: ModelConfig, count: int, interval: int,
                  mean, std, clips: int | None = None) -> tuple[Tensor, str]:
    """(a fixed sample of `count` held-out clips (N, C, T, H, W), their description): the centre clip and
    crop of videos spread evenly over --val-data, the built-in clips' validation split, or else (said
    plainly) the training videos."""
    if val_data or data == MOVING_FASHION:
        spec = val_data or data
        source = open_source(spec, "val", "clip", in_chans=config.in_chans, clips=clips)
        description = f"{spec} (held out)"
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

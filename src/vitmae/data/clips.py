"""Clips from videos: which frames a clip takes, the training and evaluation transforms, and batches.

A clip is a float tensor (C, T, H, W), PyTorch's and the official code's layout: `num_frames` frames
`frame_interval` apart (the sampling rate; VideoMAE's recipes use 16 frames at 4 on Kinetics, at 2 on
Something-Something v2). A video shorter than the clip's span repeats its last frame (the official
convention).

Both transforms take a `Video` (`video_decode.py`) and the sample's generator, and return several clips
of one video, (K, C, T, H, W), from one decode:

- `TrainClips`: `repeat` clips (MAE-ST's repeated sampling, `--repeat-aug`), each from its own random start
  and with its own random resized crop and flip, the same for every frame of the clip. The draws come
  from the sample's generator (seed, epoch, index), so resumed runs and any number of workers give the
  same clips. `collate_clips` puts every clip in the batch as a sample of its own: a batch of B videos is
  (B * repeat, C, T, H, W), the targets and indices repeated with them. The epoch sampler still counts
  videos: an epoch decodes each video once and trains on `repeat` clips of it, and `--batch-size` videos
  make a step of batch-size x repeat clips.
- `EvalClips`: VideoMAE's test views, `clips` clips spread uniformly over the video times `crops` crops
  (1: the centre; 3: both ends and the centre of the long side), after resizing the short side to the
  model's input. `collate_views` keeps the views of a video together: (B, V, C, T, H, W) with V = clips x
  crops, clip-major (view v is clip v // crops, crop v % crops), and (B,) targets. A classifier averages
  over them: `model(images.flatten(0, 1)).unflatten(0, images.shape[:2]).mean(1)`.

`ClipDataset` is the loader's `TransformedDataset`, which batches with its transform's collate;
`frame_interval` sizes the sampling rate from the videos when none is given.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from vitmae.data.loader import Batch, Sample, TransformedDataset, readable
from vitmae.data.decode import UnreadableImage
from vitmae.data.source import DataError
from vitmae.data.transforms import Normalize, PretrainTransform, Size, resized_crop, size_pair
from vitmae.data.video_decode import Video


@dataclass(frozen=True)
class ClipSampling:
    """Which frames a clip takes: `num_frames` frames `frame_interval` apart."""

    num_frames: int = 16
    frame_interval: int = 4

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.frame_interval < 1:
            raise ValueError(f"a clip takes at least 1 frame at an interval of at least 1, not "
                             f"{self.num_frames} frames at {self.frame_interval}")

    @property
    def span(self) -> int:
        """Frames of the video one clip covers, first to last."""
        return (self.num_frames - 1) * self.frame_interval + 1

    def clip(self, start: int, length: int) -> list[int]:
        """The frame indices of the clip from `start` in a video of `length` frames; those past its end
        repeat its last frame."""
        return [min(start + k * self.frame_interval, length - 1) for k in range(self.num_frames)]

    def random_clip(self, length: int, generator: torch.Generator) -> list[int]:
        """A clip from a start drawn uniformly among those that fit (0 when none does)."""
        start = int(torch.randint(0, max(0, length - self.span) + 1, (1,), generator=generator).item())
        return self.clip(start, length)

    def uniform_clips(self, length: int, count: int) -> list[list[int]]:
        """`count` clips whose starts are spread evenly from the first start that fits to the last; one
        clip is the centre one."""
        room = max(0, length - self.span)
        if count == 1:
            return [self.clip(room // 2, length)]
        return [self.clip(round(i * room / (count - 1)), length) for i in range(count)]


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


def _read_clips(video: Video, clips: list[list[int]]) -> list[list[Image.Image]]:
    """Each clip's frames, as images ('L' or 'RGB'), from one read of the frames they need."""
    try:
        needed = sorted({i for clip in clips for i in clip})
        frames = video.read(needed)
    finally:
        video.close()
    images = {index: Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)
              for index, frame in zip(needed, frames)}
    return [[images[i] for i in clip] for clip in clips]


def collate_clips(samples: Sequence[Sample]) -> Batch:
    """Training clips: every clip a sample, (N * K, C, T, H, W); targets and indices repeated K times."""
    good, skipped = readable(samples)
    counts = torch.tensor([len(s[0]) for s in good], dtype=torch.long)
    return Batch(images=torch.cat([s[0] for s in good]) if good else torch.empty(0),
                 targets=torch.tensor([s[1] for s in good], dtype=torch.long).repeat_interleave(counts),
                 indices=torch.tensor([s[2] for s in good], dtype=torch.long).repeat_interleave(counts),
                 skipped=skipped)


def collate_views(samples: Sequence[Sample]) -> Batch:
    """Evaluation views: each video's views together, (N, V, C, T, H, W); (N,) targets and indices."""
    good, skipped = readable(samples)
    return Batch(images=torch.stack([s[0] for s in good]) if good else torch.empty(0),
                 targets=torch.tensor([s[1] for s in good], dtype=torch.long),
                 indices=torch.tensor([s[2] for s in good], dtype=torch.long),
                 skipped=skipped)


class TrainClips:
    """`repeat` training clips of a video, (repeat, C, T, H, W): each its own random start, then its own
    random resized crop (bicubic) and flip for all its frames (the image recipe's draws and resampling,
    `PretrainTransform.plan` and `resized_crop`; its scale range by default), normalised per channel.

    Set `hflip=0` for labels a mirror changes (a direction of motion: `MovingFashionSource.flip_changes_label`).
    """

    collate = staticmethod(collate_clips)

    def __init__(self, sampling: ClipSampling, img_size: int | Size, mean: Sequence[float], std: Sequence[float],
                 scale: tuple[float, float] = (0.2, 1.0), ratio: tuple[float, float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, repeat: int = 1) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be at least 1, not {repeat}")
        self.sampling, self.repeat = sampling, repeat
        self.crops = PretrainTransform(img_size, mean, std, scale, ratio, hflip)

    def __call__(self, video: Video, generator: torch.Generator) -> torch.Tensor:
        starts = [self.sampling.random_clip(video.num_frames, generator) for _ in range(self.repeat)]
        out = []
        for frames in _read_clips(video, starts):
            top, left, h, w, flip = self.crops.plan(frames[0].height, frames[0].width, generator)
            x = torch.stack([resized_crop(frame, (top, left, h, w), self.crops.size) for frame in frames])
            x = self.crops.normalize(x.flip(-1) if flip else x)
            out.append(x.transpose(0, 1))
        return torch.stack(out)


class EvalClips:
    """The evaluation views of a video, (clips x crops, C, T, H, W), clip-major: `clips` clips spread
    evenly over it; each resized so that its short side fits the input (bicubic; a video already of the
    input's size is left as it is), then `crops` crops of the input's size (1: the centre; 3: the start,
    centre and end of the long side, VideoMAE's convention), normalised per channel. No randomness."""

    collate = staticmethod(collate_views)

    def __init__(self, sampling: ClipSampling, img_size: int | Size, mean: Sequence[float], std: Sequence[float],
                 clips: int = 1, crops: int = 1) -> None:
        if clips < 1 or crops not in (1, 3):
            raise ValueError(f"evaluation views are 1 or more clips of 1 or 3 crops, not {clips} x {crops}")
        self.sampling, self.clips, self.crops = sampling, clips, crops
        self.size = size_pair(img_size)
        self.normalize = Normalize(mean, std)

    def __call__(self, video: Video, generator: torch.Generator | None = None) -> torch.Tensor:
        views = []
        for frames in _read_clips(video, self.sampling.uniform_clips(video.num_frames, self.clips)):
            height, width = frames[0].height, frames[0].width
            th, tw = self.size
            scale = max(th / height, tw / width)
            rh, rw = max(th, round(height * scale)), max(tw, round(width * scale))
            x = self.normalize(torch.stack([resized_crop(frame, (0, 0, height, width), (rh, rw))
                                            for frame in frames]))
            for top, left in self._corners(rh, rw):
                views.append(x[..., top : top + th, left : left + tw].transpose(0, 1))
        return torch.stack(views)

    def _corners(self, height: int, width: int) -> list[tuple[int, int]]:
        """(top, left) of each crop: along the axis with room to spare (both: the centre)."""
        th, tw = self.size
        centre = (int(round((height - th) / 2)), int(round((width - tw) / 2)))
        if self.crops == 1:
            return [centre]
        if height - th > width - tw:
            return [(0, centre[1]), centre, (height - th, centre[1])]
        return [(centre[0], 0), centre, (centre[0], width - tw)]


# Sample i of a clip source through a clip transform, `(clips (K, C, T, H, W), target, i)`, batched by the
# transform's collate: any TransformedDataset does so; the name is the one the clip docs use.
ClipDataset = TransformedDataset

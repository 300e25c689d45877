"""Clips (data/clips.py): which frames a clip takes, the training clips (random start, one crop and flip
for all frames, repeated sampling) and the evaluation views (their count and order), and batches."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitmae.data import (Batch, ClipDataset, ClipSampling, EpochSampler, EvalClips, FrameArray, Skipped,
                         TrainClips, build_loader, collate_clips, collate_views)
from vitmae.data.decode import UnreadableImage
from vitmae.data.transforms import sample_generator

UNIT = ((0.0,) * 3, (1.0,) * 3)  # no normalisation: pixel values / 255 come out as they went in


def coded_video(frames: int, height: int = 32, width: int = 64) -> FrameArray:
    """Frames whose red channel is 4 x the frame index, green 4 x the column and blue 4 x the row: a clip's
    frames and a crop's place can be read back exactly."""
    video = np.zeros((frames, height, width, 3), dtype=np.uint8)
    video[..., 0] = 4 * np.arange(frames)[:, None, None]
    video[..., 1] = 4 * np.arange(width)[None, None, :] % 256
    video[..., 2] = 4 * np.arange(height)[None, :, None] % 256
    return FrameArray(video)


def frame_indices(clip: torch.Tensor) -> list[int]:
    """The frame indices of a (C, T, H, W) clip of a coded video (unnormalised)."""
    return [round(v) for v in (clip[0, :, 0, 0] * 255 / 4).tolist()]


def test_a_clip_takes_frames_at_the_interval_and_repeats_the_last_of_a_short_video() -> None:
    sampling = ClipSampling(num_frames=4, frame_interval=3)
    assert sampling.span == 10
    assert sampling.clip(2, 100) == [2, 5, 8, 11]
    assert sampling.clip(0, 7) == [0, 3, 6, 6]  # the official convention
    assert sampling.uniform_clips(30, 3) == [[0, 3, 6, 9], [10, 13, 16, 19], [20, 23, 26, 29]]
    assert sampling.uniform_clips(30, 1) == [[10, 13, 16, 19]]  # the centre one
    assert sampling.uniform_clips(5, 2) == [[0, 3, 4, 4]] * 2
    with pytest.raises(ValueError):
        ClipSampling(0, 1)


def test_the_random_start_covers_every_start_that_fits_and_follows_the_generator() -> None:
    sampling = ClipSampling(4, 2)
    starts = {sampling.random_clip(20, sample_generator(0, 0, i))[0] for i in range(400)}
    assert starts == set(range(20 - sampling.span + 1))
    assert sampling.random_clip(20, sample_generator(5, 1, 7)) == sampling.random_clip(20, sample_generator(5, 1, 7))
    assert sampling.random_clip(3, sample_generator(0, 0, 0)) == [0, 2, 2, 2]


class Videos:
    """A source of in-memory videos, each with a label."""

    classes = None

    def __init__(self, videos: list[FrameArray], label: int = 1) -> None:
        self.videos, self.label = videos, label
        self.paths = [video.path for video in videos]

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> tuple[FrameArray, int]:
        return self.videos[i], self.label


def test_training_clips_are_fixed_by_seed_epoch_and_index_and_not_by_the_worker_count() -> None:
    transform = TrainClips(ClipSampling(4, 3), 16, *UNIT, repeat=2)

    def epoch(dataset: ClipDataset, workers: int) -> list[torch.Tensor]:
        loader = build_loader(dataset, batch_size=3, sampler=EpochSampler(6, seed=0), num_workers=workers)
        return [batch.images for batch in loader]

    dataset = ClipDataset(Videos([coded_video(40)] * 6), transform, seed=7)
    first = epoch(dataset, 0)
    assert [images.shape for images in first] == [(6, 3, 4, 16, 16)] * 2
    assert all(torch.equal(a, b) for a, b in zip(first, epoch(ClipDataset(dataset.source, transform, seed=7), 2)))
    dataset.set_epoch(1)
    assert not torch.equal(torch.cat(first), torch.cat(epoch(dataset, 0)))


def test_a_training_clip_has_one_crop_and_flip_for_all_its_frames_and_repeats_differ() -> None:
    still = np.repeat(coded_video(1, 40, 60).frames, 12, axis=0)  # every frame the same picture
    transform = TrainClips(ClipSampling(6, 2), 24, *UNIT, repeat=4)
    clips = transform(FrameArray(still), sample_generator(0, 0, 0))
    assert clips.shape == (4, 3, 6, 24, 24)
    assert all(torch.equal(clip[:, 0], clip[:, t]) for clip in clips for t in range(6))
    assert len({clip.numpy().tobytes() for clip in clips}) == 4  # each repeat its own crop
    moving = TrainClips(ClipSampling(4, 5), 16, *UNIT, repeat=3)(coded_video(60), sample_generator(1, 0, 0))
    starts = []
    for clip in moving:
        indices = frame_indices(clip)
        assert np.diff(indices).tolist() == [5, 5, 5]
        starts.append(indices[0])
    assert len(set(starts)) == 3  # each repeat its own start


@pytest.mark.parametrize("hflip", [0.0, 1.0])
def test_flip_is_off_or_always_on_when_asked(hflip: float) -> None:
    still = np.repeat(coded_video(1).frames, 4, axis=0)
    transform = TrainClips(ClipSampling(4, 1), 32, *UNIT, scale=(1.0, 1.0), ratio=(2.0, 2.0), hflip=hflip)
    clips = torch.cat([transform(FrameArray(still), sample_generator(0, 0, i)) for i in range(20)])
    rises = clips[:, 1, :, 0, 1:] >= clips[:, 1, :, 0, :-1]  # the green channel along each frame's top row
    assert rises.all() if hflip == 0 else (~rises).all()


def test_evaluation_views_are_clips_times_crops_in_clip_major_order() -> None:
    views = EvalClips(ClipSampling(4, 2), 32, *UNIT, clips=3, crops=3)(coded_video(30))
    assert views.shape == (9, 3, 4, 32, 32)
    starts = [frame_indices(view)[0] for view in views]
    assert starts == [0, 0, 0, 12, 12, 12, 23, 23, 23]  # spread from the first start that fits to the last
    lefts = [round(view[1, 0, 0, 0].item() * 255 / 4) for view in views]
    assert lefts == [0, 16, 32] * 3  # start, centre and end of the long side
    tall = EvalClips(ClipSampling(2, 1), 32, *UNIT, crops=3)(coded_video(2, 64, 32))
    assert tall.shape == (3, 3, 2, 32, 32)
    assert [round(view[2, 0, 0, 0].item() * 255 / 4) for view in tall] == [0, 16, 32]  # down the frame
    resized = EvalClips(ClipSampling(2, 1), 16, *UNIT)(coded_video(2, 48, 96))
    assert resized.shape == (1, 3, 2, 16, 16)


def test_an_unreadable_video_found_while_decoding_is_skipped() -> None:
    class Broken(FrameArray):
        def read(self, indices):
            raise UnreadableImage(self.path, "truncated: the stream ends at frame 3 of the 40 its header gives")

    source = Videos([coded_video(10), Broken(coded_video(40).frames, "broken")])
    dataset = ClipDataset(source, EvalClips(ClipSampling(4, 2), 32, *UNIT), seed=0)
    assert isinstance(dataset[1], Skipped) and dataset[1].reason.startswith("truncated")
    batch = next(iter(build_loader(dataset, batch_size=2, drop_last=False)))
    assert batch.images.shape == (1, 1, 3, 4, 32, 32) and batch.skipped == [("broken", dataset[1].reason)]


def test_collates_put_repeated_clips_in_the_batch_and_keep_views_together() -> None:
    clips = [(torch.full((2, 1, 4, 8, 8), float(i)), 10 + i, i) for i in range(3)]
    batch = collate_clips([*clips, Skipped("bad.mp4", "empty file")])
    assert isinstance(batch, Batch) and batch.images.shape == (6, 1, 4, 8, 8)
    assert batch.targets.tolist() == [10, 10, 11, 11, 12, 12] and batch.indices.tolist() == [0, 0, 1, 1, 2, 2]
    assert batch.skipped == [("bad.mp4", "empty file")]
    views = collate_views(clips)
    assert views.images.shape == (3, 2, 1, 4, 8, 8) and views.targets.tolist() == [10, 11, 12]
    assert collate_clips([Skipped("a", "b")]).images.numel() == 0

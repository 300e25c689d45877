"""moving-fashion-mnist (data/moving_fashion.py): determinism, options, and that its time tasks do not leak:
the frames as a set are the same for every direction (exactly), and probes on one frame and on frames
without their order are at chance while a probe on ordered frames is not (measured)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vitmae.data import DataError, open_source
from vitmae.data.fashion_mnist import FASHION_MNIST_CLASSES
from vitmae.data.moving_fashion import DIRECTIONS, HEADINGS, MovingFashionSource, motion_offsets

CHANCE = 1 / len(DIRECTIONS)


@pytest.fixture(scope="module")
def train() -> MovingFashionSource:
    return MovingFashionSource("train", num=1200)


@pytest.fixture(scope="module")
def clips(train: MovingFashionSource) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames (N, T, S, S) float, direction labels, playback draws) of the first 1200 training clips."""
    frames = np.stack([train[i][0].frames[..., 0] for i in range(len(train))]).astype(np.float32) / 255
    draws = [train.draw(i) for i in range(len(train))]
    return frames, np.array(train.labels), np.array([d["reversed"] for d in draws])


def test_clips_are_a_pure_function_of_seed_split_and_index(train: MovingFashionSource) -> None:
    again = MovingFashionSource("train", num=20, pool=train.pool)
    assert all(np.array_equal(train[i][0].frames, again[i][0].frames) for i in range(20))
    other_seed = MovingFashionSource("train", num=20, seed=1, pool=train.pool)
    assert not np.array_equal(train[3][0].frames, other_seed[3][0].frames)
    val = MovingFashionSource("val", num=5)
    assert val.pool.split == "test" and train.pool.split == "train"  # no item in both
    video, label = train[0]
    assert video.frames.shape == (16, 32, 32, 1) and video.frames.dtype == np.uint8 and 0 <= label < 8
    assert video.path == "moving-fashion-mnist/train/0"


def test_the_options_and_the_three_labels(train: MovingFashionSource) -> None:
    source = open_source("moving-fashion-mnist", "val", "clip", clips=50, clip_frames=24, clip_size=48,
                         clip_items=2, clip_speed=1, in_chans=3, clip_label="class", seed=3)
    video, label = source[7]
    assert len(source) == 10 and video.frames.shape == (24, 48, 48, 3)  # validation: a fifth of `clips`
    assert source.classes == FASHION_MNIST_CLASSES and label == source.draw(7)["item_class"]
    assert len(open_source("moving-fashion-mnist", "train", "clip", clips=50)) == 50
    playback = MovingFashionSource("train", num=40, label="playback", pool=train.pool)
    assert playback.classes == ["forward", "reversed"] and set(playback.labels) == {0, 1}
    for i in range(40):  # a reversed clip is the forward clip backwards; the other labels see it forward
        forward = train[i][0].frames
        assert np.array_equal(playback[i][0].frames, forward[::-1] if playback.labels[i] else forward)
    assert train.flip_changes_label and not playback.flip_changes_label
    for bad, message in [(dict(frames=20), "a multiple of 8 frames, at least 16"), (dict(size=8), "16 px"),
                         (dict(label="speed"), "labels are direction, playback, class")]:
        with pytest.raises(DataError, match=message):
            MovingFashionSource("train", num=1, pool=train.pool, **bad)


def test_every_direction_visits_the_same_positions_so_the_frames_as_a_set_are_the_same() -> None:
    for turn in (1, -1):
        shapes = set()
        for direction in range(8):
            offsets = motion_offsets(direction, turn, 16, 2)
            steps = np.diff(np.vstack([offsets, offsets[:1]]), axis=0)
            assert (steps[0] // 4 == HEADINGS[direction]).all()  # it sets off along its heading
            shapes.add(frozenset(map(tuple, offsets - offsets.min(0))))
        assert len(shapes) == 1  # one octagon, whatever the heading: only the order differs


def test_a_reversed_clip_differs_only_in_how_it_turns_and_slows() -> None:
    offsets = motion_offsets(0, 1, 16, 2)
    steps = np.diff(np.vstack([offsets, offsets[:1]]), axis=0)
    lengths = np.abs(steps).max(1)
    turns = np.r_[True, (steps[1:] // lengths[1:, None] != steps[:-1] // lengths[:-1, None]).any(1)]
    assert lengths[turns].tolist() == [4] * 8  # forward: fast just after each turn, then slowing
    back = -steps[::-1]
    back_lengths = np.abs(back).max(1)
    back_turns = np.r_[True, (back[1:] // back_lengths[1:, None] != back[:-1] // back_lengths[:-1, None]).any(1)]
    assert back_lengths[back_turns].tolist() == [2] * 8  # backwards: slow after each turn


def _correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Circular cross-correlation maps of frames (..., S, S): translation-invariant, peaked at the shift."""
    return torch.fft.irfft2(torch.fft.rfft2(a).conj() * torch.fft.rfft2(b), s=a.shape[-2:])


def _probe_accuracy(features: torch.Tensor, labels: np.ndarray, classes: int) -> float:
    """Test accuracy of a logistic regression trained on the first two thirds of the clips."""
    torch.manual_seed(0)
    x = features.flatten(1)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    y = torch.as_tensor(labels)
    cut = 2 * len(x) // 3
    model = torch.nn.Linear(x.shape[1], classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=1e-3)
    for _ in range(100):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x[:cut]), y[:cut]).backward()
        optimizer.step()
    return (model(x[cut:]).argmax(1) == y[cut:]).float().mean().item()


def _unordered(frames: torch.Tensor) -> torch.Tensor:
    """Every pair of distinct frames of a clip correlated, and summed: all that the frames as a set say
    about motion, without their order (|sum F|^2 - sum |F|^2 of the frames' spectra F)."""
    spectra = torch.fft.rfft2(frames)
    return torch.fft.irfft2(spectra.sum(1).abs() ** 2 - (spectra.abs() ** 2).sum(1), s=frames.shape[-2:])


def test_probes_on_one_frame_or_on_unordered_frames_are_at_chance_on_direction_and_ordered_ones_are_not(
        clips) -> None:
    frames, directions, _ = clips
    frames = torch.from_numpy(frames)
    single = _probe_accuracy(frames[:, 7], directions, 8)
    without_order = _probe_accuracy(_unordered(frames), directions, 8)
    first_step = _probe_accuracy(_correlation(frames[:, 0], frames[:, 1]), directions, 8)
    margin = 4 * (CHANCE * (1 - CHANCE) / (len(frames) // 3)) ** 0.5  # 4 standard errors of chance
    assert single < CHANCE + margin and without_order < CHANCE + margin, (single, without_order)
    assert first_step > 0.9, first_step  # measured: 13.8%, 14.8% and 99.8% (chance 12.5%)
    # the same items moving straight along their heading: the unordered probe sees the axis
    straight = torch.stack([torch.stack([clip[0].roll(tuple(int(v) for v in 2 * t * HEADINGS[d]), (0, 1))
                                         for t in range(len(clip))]) for clip, d in zip(frames, directions)])
    assert _probe_accuracy(_unordered(straight), directions, 8) > 0.35  # 52% measured: the axis, not the sign


def test_order_tells_forward_from_reversed(train: MovingFashionSource) -> None:
    # the same clips forward and backwards: their frames as sets are equal, so only order can tell them;
    # where each turn falls, after a fast step or a slow one, does
    playback = MovingFashionSource("train", num=200, label="playback", pool=train.pool)
    frames = torch.from_numpy(np.stack([playback[i][0].frames[..., 0] for i in range(200)]).astype(np.float32))
    maps = _correlation(frames[:, :-1], frames[:, 1:]).flatten(2)
    size = frames.shape[-1]
    shift = torch.stack([maps.argmax(-1) // size, maps.argmax(-1) % size], -1)
    shift = (shift + size // 2) % size - size // 2  # each step's displacement, (rows, columns)
    length = shift.abs().amax(-1)
    turned = (shift[:, 1:] // length[:, 1:, None] != shift[:, :-1] // length[:, :-1, None]).any(-1)
    after_turn = (length[:, 1:] * turned).sum(1) / turned.sum(1)  # how fast it goes just after turning
    predicted = (after_turn < 3).long()  # slow after turns: reversed
    assert (predicted.numpy() == np.array(playback.labels)).mean() > 0.95

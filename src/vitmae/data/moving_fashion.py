"""`moving-fashion-mnist`: Fashion-MNIST items moving on a canvas, built in, with nothing to download.

A clip is `frames` frames (default 16) of a `size` px square grayscale canvas (default 32): `items` items
(default 1) of one Fashion-MNIST class, each `size // 2` px, moving together. Train clips take their items
from Fashion-MNIST's train split, validation and test clips from its test split. Each clip is a pure
function of (seed, split, index). Three labels, one per task:

- `direction`: the heading the items set off in, one of 8 (east, north-east, ..., south-east);
- `playback`: forward (0) or reversed (1): with this label, half of the clips are played backwards (with
  the others, every clip plays forward);
- `class`: the items' Fashion-MNIST class.

How the design keeps the first two from leaking into what needs no time:

- Single frames. The canvas is a torus (what leaves one side comes back on the other) and each item
  starts at a uniformly random position, so every frame, alone, shows the items at uniformly random
  positions, whatever the labels.
- Frames without their order. An item moving straight would put its frames on a line, and the set of
  frames would give the line's axis: the direction up to its sign, half the answer (a probe on shuffled
  frames would score 50% on 8 directions). So an item does not move straight. It goes once around a
  closed octagon: frames/8 frames along each of the 8 headings in turn, turning 45 degrees each time
  (left or right, drawn per clip), and the label is the heading it starts with. Whatever the heading and
  the turn, its positions over the clip are the same octagon, moved by the uniform start: the frames as
  a set have the same distribution for every direction, and only their order tells it.
- Forward versus reversed. A reversed clip holds exactly the frames of the forward one, so nothing
  without order can tell them apart. Order can, because the motion is not time-symmetric: a kick at each
  turn, then friction. Along each side of the octagon the item steps speed x (n, n-1, ..., 1) px (n =
  frames/8): fast just after a turn, slowing until the next. Played backwards it speeds up into each
  turn and stops dead at it, which a forward clip never does. (Constant speed, or a ballistic arc, looks
  the same both ways: a reversed clip would be an ordinary forward one.)

The direction and the playback are shown by order alone, by construction: `tests/data/test_moving_fashion.py`
checks it exactly (the frames as a set are the same for every heading) and measures it (probes on one
frame and on frames without order are at chance, a probe on ordered frames is not). A horizontal flip
changes the direction (east becomes west): `flip_changes_label` says so for the training transform.
"""
from __future__ import annotations

from functools import cached_property

import numpy as np
from PIL import Image

from vitmae.data.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNISTSource
from vitmae.data.source import DataError
from vitmae.data.video_decode import FrameArray

MOVING_FASHION = "moving-fashion-mnist"  # the name that selects it wherever data is named
DIRECTIONS = ["east", "north-east", "north", "north-west", "west", "south-west", "south", "south-east"]
PLAYBACK = ["forward", "reversed"]
LABELS = {"direction": DIRECTIONS, "playback": PLAYBACK, "class": FASHION_MNIST_CLASSES}
# one step along each heading, (rows, columns): rows grow downwards, so north is -1
HEADINGS = np.array([(0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1), (1, 0), (1, 1)])
_SPLITS = {"train": ("train", 0), "val": ("test", 1), "test": ("test", 1)}  # split -> (items, key)
DEFAULT_CLIPS = {"train": 10_000, "val": 2_000, "test": 2_000}


def motion_offsets(direction: int, turn: int, frames: int, speed: int) -> np.ndarray:
    """(frames, 2) integer (row, column) offsets from the start: frames/8 steps along each heading from
    `direction`, turning by `turn` (+1: left, -1: right) eighths; step i of a side is speed * (n - i) px."""
    steps = [speed * (frames // 8 - i) for i in range(frames // 8)]
    offsets = [np.zeros(2, dtype=np.int64)]
    for side in range(8):
        for length in steps:
            offsets.append(offsets[-1] + length * HEADINGS[(direction + turn * side) % 8])
    return np.stack(offsets[:frames])  # the last step, back to the start, is the next clip's first frame


class MovingFashionSource:
    """`num` clips of `split` (train, or val / test: items from Fashion-MNIST's test split), made on access:
    `(FrameArray (frames, size, size, in_chans) uint8, label)`, the label chosen by `label` (LABELS)."""

    def __init__(self, split: str = "train", num: int | None = None, frames: int = 16, size: int = 32,
                 items: int = 1, speed: int = 2, seed: int = 0, in_chans: int = 1, label: str = "direction",
                 pool: FashionMNISTSource | None = None) -> None:
        if split not in _SPLITS:
            raise DataError(f"unknown split {split!r} for {MOVING_FASHION} (train, val or test)")
        if label not in LABELS:
            raise DataError(f"{MOVING_FASHION} labels are {', '.join(LABELS)}, not {label!r}")
        if frames < 16 or frames % 8:
            raise DataError(f"{MOVING_FASHION} clips have a multiple of 8 frames, at least 16 (8 sides of "
                            f"at least 2 frames), not {frames}")
        if size < 16:
            raise DataError(f"{MOVING_FASHION} needs at least 16 px a side, not {size}")
        if items < 1 or speed < 1:
            raise DataError(f"{MOVING_FASHION} needs at least 1 item and a speed of at least 1 px, not "
                            f"{items} items at {speed}")
        if in_chans not in (1, 3):
            raise DataError(f"{MOVING_FASHION} clips have 1 or 3 channels, not {in_chans}")
        item_split, self.split_key = _SPLITS[split]
        self.pool = pool or FashionMNISTSource(item_split)
        self._members = [np.flatnonzero(self.pool.labels == c) for c in range(len(FASHION_MNIST_CLASSES))]
        self.num = DEFAULT_CLIPS[split] if num is None else num
        self.split, self.frames, self.size, self.items, self.speed = split, frames, size, items, speed
        self.seed, self.in_chans, self.label = seed, in_chans, label
        self.classes = LABELS[label]
        self.flip_changes_label = label == "direction"  # a mirror turns east into west
        self.paths = [f"{MOVING_FASHION}/{split}/{i}" for i in range(self.num)]

    def __len__(self) -> int:
        return self.num

    def draw(self, index: int) -> dict:
        """The random choices of clip `index`: its class, items, starts, direction, turn and playback."""
        rng = np.random.default_rng([self.seed, self.split_key, index])
        item_class = int(rng.integers(len(self._members)))
        members = self._members[item_class]
        return dict(item_class=item_class, items=members[rng.integers(len(members), size=self.items)],
                    starts=rng.integers(self.size, size=(self.items, 2)), direction=int(rng.integers(8)),
                    turn=1 if rng.integers(2) else -1, reversed=bool(rng.integers(2)))

    def render(self, items: np.ndarray, starts: np.ndarray, direction: int, turn: int) -> np.ndarray:
        """The forward clip, (frames, size, size) uint8: each item pasted at its start plus the motion's
        offsets on the torus; overlapping items keep the brighter pixel."""
        side = self.size // 2
        offsets = motion_offsets(direction, turn, self.frames, self.speed)
        clip = np.zeros((self.frames, self.size, self.size), dtype=np.uint8)
        for item, start in zip(items, starts):
            tile = np.zeros((self.size, self.size), dtype=np.uint8)
            tile[:side, :side] = np.asarray(Image.fromarray(self.pool.images[item]).resize((side, side),
                                                                                         Image.BILINEAR))
            for t, offset in enumerate(offsets):
                np.maximum(clip[t], np.roll(tile, tuple(start + offset), axis=(0, 1)), out=clip[t])
        return clip

    def _label(self, draw: dict) -> int:
        return {"direction": draw["direction"], "playback": int(draw["reversed"]),
                "class": draw["item_class"]}[self.label]

    @cached_property
    def labels(self) -> list[int]:
        """Every clip's label, from its draws (nothing rendered)."""
        return [self._label(self.draw(i)) for i in range(self.num)]

    def __getitem__(self, index: int) -> tuple[FrameArray, int]:
        if not 0 <= index < self.num:
            raise IndexError(index)
        draw = self.draw(index)
        clip = self.render(draw["items"], draw["starts"], draw["direction"], draw["turn"])
        if self.label == "playback" and draw["reversed"]:
            clip = clip[::-1]
        frames = np.repeat(clip[..., None], self.in_chans, axis=-1)
        return FrameArray(frames, self.paths[index]), self._label(draw)

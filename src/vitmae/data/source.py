"""What every source shares: the `Source` protocol, `DataError`, skipped samples and their summary, the
check of integer class labels, and the epoch number that DataLoader workers read.

A map-style source gives `(image, target)` for an index, plus `paths` (how each sample is named in logs
and skip lists) and `classes` (names, or None). Decoding happens in the source and may raise
`UnreadableImage`; `loader.TransformedDataset` turns that into a `Skipped` marker. A streamed source
(`shards.ShardSource`) is an iterable that does both steps itself.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vitmae.data.decode import ImageLike

log = logging.getLogger(__name__)

# Integer labels are class ids 0..K-1 with K = max label + 1 classes, so a stray huge label would size
# a huge classifier: K may be at most MAX_CLASSES, and above DENSE_CLASSES at most DENSE_FACTOR times the
# number of distinct labels (ImageNet-1k's ids are always accepted, even in a subset of its classes).
MAX_CLASSES = 100_000
DENSE_CLASSES = 1000
DENSE_FACTOR = 10
# A segmentation head makes a map of logits per class, a detection head a 28x28 mask per class and region:
# a dense task has at most MAX_DENSE_CLASSES classes (ADE20K-full's 3,688 and LVIS's 1,203 fit).
MAX_DENSE_CLASSES = 4096


class DataError(ValueError):
    """A data source the user named cannot be used; the message is one line."""


class Source(Protocol):
    paths: Sequence[str]
    classes: list[str] | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[ImageLike, Any]: ...


@dataclass(frozen=True)
class Skipped:
    """Stands in for a sample that could not be decoded, so its batch can report it."""

    path: str
    reason: str


_warned: set[str] = set()


def skip_sample(path: str, reason: str) -> Skipped:
    """Log an unreadable sample (once per file and process) and return its marker."""
    if path not in _warned:
        _warned.add(path)
        log.warning("skipping unreadable image %s: %s", path, reason)
    return Skipped(path, reason)


def mark_reported(paths: Iterable[str]) -> None:
    """Paths whose skip a summary line has already reported (a scan of the data: `mask_scan`):
    `skip_sample` lists them without a warning each (in this process and the workers it forks)."""
    _warned.update(paths)


def skip_summary(reasons: Iterable[str], shown: int = 3) -> str:
    """'12 skipped (9x: reason A; 3x: reason B)': how many, and the most common reasons with counts."""
    counts = Counter(reasons)
    common = "; ".join(f"{n}x: {reason}" for reason, n in counts.most_common(shown))
    more = f"; {len(counts) - shown} other reasons" if len(counts) > shown else ""
    return f"{sum(counts.values())} skipped ({common}{more})"


def require_readable(readable: int, where: str, reasons: Iterable[str]) -> None:
    """Stop with a DataError that says why, when none of the images of `where` could be read: a run on
    nothing would otherwise train on nothing and save a checkpoint (`reasons`: those of the skips)."""
    if not readable:
        reasons = list(reasons)
        raise DataError(f"no readable image in {where}" + (f": {skip_summary(reasons)}" if reasons else ""))


def class_count(labels: Sequence[int], where: str, line_numbers: Sequence[int] | None = None) -> int:
    """K = max label + 1, the number of classes of integer labels (-1 = unlabeled), after checking them:
    no label below -1, and K within MAX_CLASSES and, above DENSE_CLASSES, within DENSE_FACTOR x the
    number of distinct labels. Errors name the offending label's line (or position) in `where`."""
    def at(i: int) -> str:
        return f"line {line_numbers[i]}" if line_numbers is not None else f"sample {i}"

    if not len(labels):
        return 0
    low = min(range(len(labels)), key=lambda i: labels[i])  # Python ints: a label may overflow int64
    if labels[low] < -1:
        raise DataError(f"{where}, {at(low)}: label {labels[low]} is negative (class ids are 0, 1, ...; "
                        "an empty label or -1 means unlabeled)")
    high = max(range(len(labels)), key=lambda i: labels[i])
    if labels[high] < 0:
        return 0
    count, distinct = int(labels[high]) + 1, len({int(label) for label in labels if label >= 0})
    if count > MAX_CLASSES or (count > DENSE_CLASSES and count > DENSE_FACTOR * distinct):
        raise DataError(
            f"{where}, {at(high)}: label {labels[high]} would make {count} classes for {distinct} distinct "
            f"labels; integer labels are class ids 0..K-1, and K may be at most {MAX_CLASSES}, and above "
            f"{DENSE_CLASSES} at most {DENSE_FACTOR}x the distinct labels: renumber them or use class names")
    return count


class SharedEpoch:
    """An epoch number in shared memory: DataLoader workers (persistent ones too) see `set` at once."""

    def __init__(self) -> None:
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value[0] = epoch

    def get(self) -> int:
        return int(self._value[0])

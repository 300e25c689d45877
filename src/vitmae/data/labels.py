"""Labeled data for transfer: train / validation sources and stratified, seeded label subsets.

    train, val, note = labeled_splits("fashion-mnist", None, in_chans=1)        # train and test splits
    train = label_subset(train, fraction=0.01, seed=0)                          # 60 images of each class

A folder with `train/` and `val/` sub-folders, or `--val-data` given, has its own validation set. A
source without one (a CSV, a flat class folder) is split: a stratified, seeded 10% is held out for
validation and never trained on.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from vitmae.data.decode import ImageLike
from vitmae.data.registry import open_source
from vitmae.data.shards import ShardSource
from vitmae.data.source import DataError, Source, class_count
from vitmae.data.transforms import mix_seed

HOLDOUT_FRACTION = 0.1


class SubsetSource:
    """The samples `indices` of a map-style source, as a source of their own."""

    def __init__(self, source: Source, indices: Sequence[int]) -> None:
        self.source = source
        self.indices = [int(i) for i in indices]
        self.classes = source.classes
        paths = source.paths
        self.paths = [paths[i] for i in self.indices]
        labels = source_labels(source)
        self.labels = [int(labels[i]) for i in self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[ImageLike, int]:
        return self.source[self.indices[index]]


def source_labels(source: Source) -> np.ndarray:
    """Every sample's class id (-1 unlabeled), read without decoding images where the source keeps them."""
    labels = getattr(source, "labels", None)
    if labels is None:
        labels = [source[i][1] for i in range(len(source))]
    return np.asarray(labels, dtype=np.int64)


def num_classes_of(source: Source) -> int:
    if source.classes:
        return len(source.classes)
    return class_count(source_labels(source).tolist(), "labels")


def class_names(source: Source, num_classes: int) -> list[str]:
    names = list(source.classes or [])
    return names + [str(i) for i in range(len(names), num_classes)]


def stratified_counts(class_sizes: Sequence[int], fraction: float) -> list[int]:
    """How many of each class a `fraction` keeps: the total is round(fraction * N) exactly, each class gets
    floor or ceil of its share (largest remainders first), and a class never drops to zero."""
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"labels fraction must be in (0, 1], got {fraction}")
    sizes = [int(s) for s in class_sizes]
    total = round(fraction * sum(sizes))
    shares = [s * fraction for s in sizes]
    counts = [math.floor(x) for x in shares]
    order = sorted(range(len(sizes)), key=lambda c: (-(shares[c] - counts[c]), c))
    for c in order[: max(0, total - sum(counts))]:
        counts[c] += 1
    return [max(n, 1 if s else 0) for n, s in zip(counts, sizes)]


def stratified_indices(labels: Sequence[int] | np.ndarray, *, fraction: float | None = None,
                       per_class: int | None = None, seed: int = 0) -> list[int]:
    """Sorted indices of a stratified random subset of the labeled samples (label >= 0): a `fraction` of
    each class (see stratified_counts) or `per_class` of each (all of a smaller class). Class c's samples
    are shuffled by a generator keyed by (seed, c), so the same seed keeps the same images, and a larger
    subset holds every image of a smaller one with the same seed."""
    if (fraction is None) == (per_class is None):
        raise DataError("give either a labels fraction or a number of labels per class")
    if per_class is not None and per_class < 1:
        raise DataError(f"labels per class must be at least 1, got {per_class}")
    labels = np.asarray(labels, dtype=np.int64)
    classes = sorted(int(c) for c in np.unique(labels) if c >= 0)
    members = {c: np.flatnonzero(labels == c) for c in classes}
    counts = (stratified_counts([len(members[c]) for c in classes], fraction) if fraction is not None
              else [min(per_class, len(members[c])) for c in classes])
    keep: list[int] = []
    for c, count in zip(classes, counts):
        generator = torch.Generator().manual_seed(mix_seed(seed, 0x5AB5E7, c))
        order = torch.randperm(len(members[c]), generator=generator).numpy()
        keep.extend(members[c][order[:count]].tolist())
    return sorted(keep)


def label_subset(source: Source, *, fraction: float | None = None, per_class: int | None = None,
                 seed: int = 0) -> Source:
    """The labeled samples of `source`, or a stratified subset of them (see stratified_indices)."""
    labels = source_labels(source)
    if fraction is None and per_class is None or fraction == 1.0:
        if (labels >= 0).all():
            return source
        return SubsetSource(source, np.flatnonzero(labels >= 0))
    return SubsetSource(source, stratified_indices(labels, fraction=fraction, per_class=per_class, seed=seed))


def labeled_splits(data: str, val_data: str | None, in_chans: int | None, seed: int = 0, target: str = "class",
                   **options) -> tuple[Source, Source, str]:
    """(train source, validation source, a description of where the validation images come from).
    `target`: "class" (images), or "clip" (videos; `options` are more open_source options, such as the
    built-in clips' label)."""
    train = open_source(data, "train", target, in_chans=in_chans, **options)
    if isinstance(train, ShardSource):
        raise DataError("streamed shards are not supported for labeled transfer: use a folder, a CSV or "
                        "fashion-mnist")
    labels = source_labels(train)
    if not (labels >= 0).any():
        raise DataError(f"{data}: no labels (use class sub-folders, a CSV of path,label, or fashion-mnist)")
    if val_data:
        val = open_source(val_data, "val", target, in_chans=in_chans, **options)
        description = f"{val_data}"
    else:
        val = open_source(data, "val", target, in_chans=in_chans, **options)
        description = f"{data} ({getattr(val, 'split', 'val')} split)"  # Fashion-MNIST's is its test split
    if isinstance(val, ShardSource):
        raise DataError("streamed shards are not supported as validation data")
    if list(val.paths) == list(train.paths):  # no separate validation split: hold some out
        held = stratified_indices(labels, fraction=HOLDOUT_FRACTION, seed=mix_seed(seed, 0x4E1D))
        held_set = set(held)
        rest = [i for i in range(len(train)) if i not in held_set and labels[i] >= 0]
        train, val = SubsetSource(train, rest), SubsetSource(train, held)
        description = f"{data} (a stratified {HOLDOUT_FRACTION:.0%} held out of the labeled images)"
    _check_classes(train, val, data)
    return train, val, description


def _check_classes(train: Source, val: Source, data: str) -> None:
    if train.classes and val.classes and list(train.classes) != list(val.classes):
        raise DataError(f"{data}: the validation classes {val.classes[:5]} differ from the training classes "
                        f"{train.classes[:5]}")

"""From a source to batches: per-sample transforms, skip reporting, a resumable sampler, the DataLoader.

The data contract every task shares: a source gives `(image, target)` for an index, where the target is
whatever the task needs (a class id, -1 where unlabeled or for pre-training; a mask; boxes with labels
and masks); a transform turns the image into a tensor (a `JointTransform` turns image and target
together, so a crop moves a mask with its image); a sample is `(image tensor, target, index)`; a task's
collate makes the samples a `Batch(images, targets, indices, skipped)` (`collate` stacks class ids).

Unreadable files do not stop a run: the dataset returns a `Skipped` marker in their place and collate
moves the markers into `Batch.skipped`, so the main process can count skips from every worker.
A batch may therefore hold fewer samples than the batch size, or none.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from vitmae.data.decode import UnreadableImage
from vitmae.data.shards import ShardSource
from vitmae.data.source import SharedEpoch, Skipped, Source, skip_sample
from vitmae.data.transforms import Transform, mix_seed, sample_generator

Sample = tuple[torch.Tensor, Any, int] | Skipped


class JointTransform:
    """Base of the transforms that change an image and its target together (a crop or a flip of an image
    and of its mask or boxes): `(image, target, generator) -> (tensor, target)`. Any other transform
    takes `(image, generator)` and leaves the target as it is."""

    def __call__(self, image: Any, target: Any, generator: torch.Generator) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError


class TransformedDataset(Dataset):
    """Sample i of a source, transformed with the generator of (seed, epoch, i): `(tensor, target, i)`."""

    def __init__(self, source: Source, transform: Transform, seed: int = 0) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    @property
    def collate_fn(self):
        """How `build_loader` batches the samples: the transform's own collate where it has one (clips,
        data/clips.py), else `collate`."""
        return getattr(self.transform, "collate", collate)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        # a video is decoded by its transform, which reads only the frames its clips need: a file found
        # unreadable there is skipped like one found unreadable by its source
        try:
            img, target = self.source[index]
            generator = sample_generator(self.seed, self._epoch.get(), index)
            if isinstance(self.transform, JointTransform):
                img, target = self.transform(img, target, generator)
            else:
                img = self.transform(img, generator)
        except UnreadableImage as err:
            return skip_sample(self.source.paths[index], err.reason)
        return img, target, index


def build_dataset(
    source: Source | ShardSource, transform: Transform, seed: int = 0
) -> TransformedDataset | ShardSource:
    """Attach a transform to any source: map-style sources are wrapped, shard streams transform themselves."""
    if isinstance(source, ShardSource):
        return source.with_transform(transform, seed)
    return TransformedDataset(source, transform, seed)


@dataclass
class Batch:
    # (N, C, H, W) float; video clips (N, C, T, H, W), evaluation views (N, V, C, T, H, W) (data/clips.py);
    # torch.empty(0) when every sample was skipped
    images: torch.Tensor
    targets: Any  # what the task's collate made of the targets: (N,) long class ids (-1: none), ...
    indices: torch.Tensor  # (N,) long: sample indices, the keys of the per-sample generators
    skipped: list[tuple[str, str]]  # (path, reason) of the samples that could not be decoded

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True): copies to the GPU can be async
        return replace(self, images=self.images.pin_memory(), indices=self.indices.pin_memory(),
                       targets=_map_tensors(self.targets, torch.Tensor.pin_memory))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=non_blocking)

        return replace(self, images=move(self.images), indices=move(self.indices),
                       targets=_map_tensors(self.targets, move))


def _map_tensors(value: Any, fn) -> Any:
    """`fn` applied to every tensor in nested lists, tuples and dicts (the targets of dense tasks)."""
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_tensors(v, fn) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_map_tensors(v, fn) for v in value)
    return value


def readable(batch: Sequence[Sample]) -> tuple[list[tuple[torch.Tensor, Any, int]], list[tuple[str, str]]]:
    """(the decoded samples, (path, reason) of the skipped ones): what every collate starts from."""
    return ([s for s in batch if not isinstance(s, Skipped)],
            [(s.path, s.reason) for s in batch if isinstance(s, Skipped)])


def collate(batch: Sequence[Sample]) -> Batch:
    """Images stacked, targets as a (N,) tensor of class ids (-1 for none: pre-training, unlabeled)."""
    good, skipped = readable(batch)
    return Batch(
        images=torch.stack([s[0] for s in good]) if good else torch.empty(0),
        targets=torch.tensor([s[1] for s in good], dtype=torch.long),
        indices=torch.tensor([s[2] for s in good], dtype=torch.long),
        skipped=skipped,
    )


class StreamLoader(DataLoader):
    """A DataLoader over a stream (shards) that drops each worker's last partial batch, as `drop_last`
    does, but not its skipped samples: they are carried into the next full batch, so that every skipped
    file reaches `Batch.skipped` (and the run's `skipped_files`), even across passes over the stream."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, drop_last=False, **kwargs)
        self._carried: list[tuple[str, str]] = []

    def __iter__(self) -> Iterator[Batch]:
        for batch in super().__iter__():
            if len(batch) + len(batch.skipped) < self.batch_size:  # the end of a worker's stream
                self._carried += batch.skipped
                continue
            if self._carried:
                batch, self._carried = replace(batch, skipped=self._carried + batch.skipped), []
            yield batch


class EpochSampler(Sampler[int]):
    """A permutation fixed by (seed, epoch), split across ranks, resumable mid-epoch.

    Rank r takes every world_size-th index starting at r, like DistributedSampler: with drop_last the
    tail that does not divide evenly is dropped, otherwise the permutation's head is repeated to pad it.
    `skip(n)` drops this rank's first n samples until the next `set_epoch`, so a run resumed after
    k batches of size b calls `skip(k * b)` and sees exactly the rest of the same epoch.
    """

    def __init__(
        self,
        num_samples: int,
        seed: int = 0,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        if num_samples < (world_size if drop_last else 1):
            raise ValueError(f"{num_samples} samples cannot be split across {world_size} ranks")
        self.num_samples, self.seed, self.shuffle = num_samples, seed, shuffle
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.epoch, self._skip = 0, 0

    @property
    def samples_per_rank(self) -> int:
        if self.drop_last:
            return self.num_samples // self.world_size
        return math.ceil(self.num_samples / self.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self._skip = epoch, 0

    def skip(self, n_samples: int) -> None:
        if not 0 <= n_samples <= self.samples_per_rank:
            raise ValueError(f"cannot skip {n_samples} of {self.samples_per_rank} samples")
        self._skip = n_samples

    def rank_indices(self) -> list[int]:
        """This rank's whole epoch, before any skip."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))
            order = torch.randperm(self.num_samples, generator=generator).tolist()
        else:
            order = list(range(self.num_samples))
        total = self.samples_per_rank * self.world_size
        order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank : total : self.world_size]

    def __iter__(self) -> Iterator[int]:
        return iter(self.rank_indices()[self._skip :])

    def __len__(self) -> int:
        return self.samples_per_rank - self._skip


def build_loader(
    dataset: Dataset,
    batch_size: int,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    pin_memory: bool = False,
    drop_last: bool = True,
    persistent_workers: bool | None = None,
    collate_fn=None,
) -> DataLoader:
    """A DataLoader yielding `Batch`es, made by the task's `collate_fn` (default: `collate`, class ids).
    Shard streams split themselves across ranks and workers, so they take no sampler, and keep the skips
    of the partial batches they drop (StreamLoader); workers persist between epochs unless told otherwise.
    Device-side augmentation's dataset batches with a collate of its own (`EncodedBatch`es)."""
    if isinstance(dataset, IterableDataset) and sampler is not None:
        raise ValueError("an iterable (shard) dataset takes no sampler")
    options = dict(batch_size=batch_size, num_workers=num_workers,
                   collate_fn=collate_fn or getattr(dataset, "collate_fn", collate), pin_memory=pin_memory,
                   persistent_workers=num_workers > 0 if persistent_workers is None else persistent_workers,
                   # Each iteration draws its workers' base seed: from a generator of the loader's own,
                   # not from the global stream that drop path and a detector's sampling use, so that a
                   # run resumed mid-epoch (one more iteration started) continues that stream exactly.
                   # Per-sample randomness does not depend on it (sample_generator).
                   generator=torch.Generator().manual_seed(0))
    if isinstance(dataset, IterableDataset) and drop_last:
        return StreamLoader(dataset, **options)
    return DataLoader(dataset, sampler=sampler, drop_last=drop_last, **options)

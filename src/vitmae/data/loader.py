"""From a source to batches: per-sample transforms, skip reporting, a resumable sampler, the DataLoader.

Unreadable files do not stop a run: the dataset returns a `Skipped` marker in their place and `collate`
moves the markers into `Batch.skipped`, so the main process can count skips from every worker.
A batch may therefore hold fewer samples than the batch size, or none.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Sampler

from vitmae.data.decode import UnreadableImage
from vitmae.data.sources import ShardSource, SharedEpoch, Skipped, Source, skip_sample
from vitmae.data.transforms import Transform, mix_seed, sample_generator

Sample = tuple[torch.Tensor, int, int] | Skipped


class TransformedDataset(Dataset):
    """Sample i of a source, transformed with the generator of (seed, epoch, i): `(tensor, i, label)`."""

    def __init__(self, source: Source, transform: Transform, seed: int = 0) -> None:
        self.source, self.transform, self.seed = source, transform, seed
        self._epoch = SharedEpoch()

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int) -> Sample:
        try:
            img, label = self.source[index]
        except UnreadableImage as err:
            return skip_sample(self.source.paths[index], err.reason)
        return self.transform(img, sample_generator(self.seed, self._epoch.get(), index)), index, label


def build_dataset(
    source: Source | ShardSource, transform: Transform, seed: int = 0
) -> TransformedDataset | ShardSource:
    """Attach a transform to any source: map-style sources are wrapped, shard streams transform themselves."""
    if isinstance(source, ShardSource):
        return source.with_transform(transform, seed)
    return TransformedDataset(source, transform, seed)


@dataclass
class Batch:
    images: torch.Tensor  # (N, C, H, W) float; torch.empty(0) when every sample was skipped
    indices: torch.Tensor  # (N,) long: sample indices, the keys of the per-sample generators
    labels: torch.Tensor  # (N,) long: class ids, -1 where unlabeled
    skipped: list[tuple[str, str]]  # (path, reason) of the samples that could not be decoded

    def __len__(self) -> int:
        return len(self.indices)

    def pin_memory(self) -> Batch:  # called by DataLoader(pin_memory=True): copies to the GPU can be async
        return replace(self, images=self.images.pin_memory(), indices=self.indices.pin_memory(),
                       labels=self.labels.pin_memory())

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        return replace(
            self,
            images=self.images.to(device, non_blocking=non_blocking),
            indices=self.indices.to(device, non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )


def collate(batch: Sequence[Sample]) -> Batch:
    good = [s for s in batch if not isinstance(s, Skipped)]
    return Batch(
        images=torch.stack([s[0] for s in good]) if good else torch.empty(0),
        indices=torch.tensor([s[1] for s in good], dtype=torch.long),
        labels=torch.tensor([s[2] for s in good], dtype=torch.long),
        skipped=[(s.path, s.reason) for s in batch if isinstance(s, Skipped)],
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
) -> DataLoader:
    """A DataLoader yielding `Batch`es. Shard streams split themselves across ranks and workers, so
    they take no sampler, and keep the skips of the partial batches they drop (StreamLoader); workers
    persist between epochs unless told otherwise. A dataset with a
    `collate_fn` of its own batches with it (device-side augmentation: `EncodedBatch`es)."""
    if isinstance(dataset, IterableDataset) and sampler is not None:
        raise ValueError("an iterable (shard) dataset takes no sampler")
    options = dict(batch_size=batch_size, num_workers=num_workers, collate_fn=getattr(dataset, "collate_fn", collate),
                   pin_memory=pin_memory,
                   persistent_workers=num_workers > 0 if persistent_workers is None else persistent_workers)
    if isinstance(dataset, IterableDataset) and drop_last:
        return StreamLoader(dataset, **options)
    return DataLoader(dataset, sampler=sampler, drop_last=drop_last, **options)

"""WebDataset tar shards, streamed: brace patterns, reading the tar members of a sample, and splitting
the shards between ranks and DataLoader workers."""
from __future__ import annotations

import copy
import os
import posixpath
import re
import tarfile
from collections.abc import Iterator, Sequence
from typing import IO

import torch
import torch.distributed as dist
from torch.utils.data import IterableDataset, get_worker_info

from vitmae.data.decode import UnreadableImage, load_image
from vitmae.data.source import DataError, SharedEpoch, Skipped, skip_sample
from vitmae.data.transforms import Transform, mix_seed, sample_generator

# Sample numbers of shard k start at k * SHARD_STRIDE: unique and independent of the worker count.
SHARD_STRIDE = 1_000_000_000
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "npy")
# A shard member larger than this is skipped (and listed) without being read: encoded images are far
# smaller, and raw 8-bit RGB at the pixel limit (decode.MAX_PIXELS) is 256 MiB.
MAX_MEMBER_BYTES = 256 * 2**20


class ShardSource(IterableDataset):
    """WebDataset tar shards, streamed: each shard is read by exactly one (rank, worker) per epoch.

    `urls` is a pattern like `shards/train-{000000..000127}.tar` (or a list of them); non-local URLs
    are opened with fsspec. A sample is the tar members sharing a key: the image is the first of the
    jpg / jpeg / png / webp / npy members, the label an optional `cls` member. Shard order is shuffled
    per epoch; samples within a shard are read in order, so write shards already shuffled.

    Iterating yields what `TransformedDataset` yields: `(tensor, label, index)` or `Skipped`, where
    `index` = shard number * SHARD_STRIDE + position in the shard, the key of the per-sample generator.
    A transform must be attached first (`with_transform`).
    """

    classes = None

    def __init__(
        self,
        urls: str | Sequence[str],
        in_chans: int = 3,
        shuffle: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        patterns = [urls] if isinstance(urls, str) else list(urls)
        self.shards = [shard for pattern in patterns for shard in expand_braces(pattern)]
        missing = [s for s in self.shards if "://" not in s and not os.path.isfile(s)]
        if missing:
            raise DataError(f"{len(missing)} of {len(self.shards)} shards not found, e.g. {missing[0]}")
        distributed = dist.is_available() and dist.is_initialized()
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        self.world_size = world_size if world_size is not None else (dist.get_world_size() if distributed else 1)
        if len(self.shards) < self.world_size:
            raise DataError(f"{len(self.shards)} shards cannot feed {self.world_size} ranks")
        self.in_chans, self.shuffle = in_chans, shuffle
        self.transform: Transform | None = None
        self.seed = 0
        self._epoch = SharedEpoch()

    def with_transform(self, transform: Transform, seed: int) -> ShardSource:
        shards = copy.copy(self)
        shards.transform, shards.seed, shards._epoch = transform, seed, SharedEpoch()
        return shards

    def set_epoch(self, epoch: int) -> None:
        self._epoch.set(epoch)

    def shards_for(self, epoch: int, worker: int, num_workers: int) -> list[tuple[int, str]]:
        """(shard number, url) read by `worker` of this rank in `epoch`."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            generator = torch.Generator().manual_seed(mix_seed(self.seed, epoch))
            order = torch.randperm(len(order), generator=generator).tolist()
        consumer, consumers = self.rank * num_workers + worker, self.world_size * num_workers
        return [(k, self.shards[k]) for k in order[consumer::consumers]]

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int, int] | Skipped]:
        transform = self.transform
        if transform is None:
            raise RuntimeError("ShardSource has no transform: use with_transform() or loader.build_dataset()")
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info else (0, 1)
        epoch = self._epoch.get()
        for shard_number, url in self.shards_for(epoch, worker, num_workers):
            try:
                for position, (key, fields, oversized) in enumerate(_tar_samples(url)):
                    index = shard_number * SHARD_STRIDE + position
                    if oversized:
                        yield skip_sample(f"{url}#{key}", f"member {oversized[0]} is over the limit of "
                                                          f"{MAX_MEMBER_BYTES} bytes")
                        continue
                    generator = sample_generator(self.seed, epoch, index)
                    yield self._sample(f"{url}#{key}", index, fields, transform, generator)
            except (OSError, tarfile.TarError) as err:  # a missing or corrupt shard: report it, go on
                yield skip_sample(url, f"unreadable shard: {err}")

    def _sample(
        self,
        path: str,
        index: int,
        fields: dict[str, bytes],
        transform: Transform,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, int, int] | Skipped:
        key = next((k for k in SHARD_IMAGE_KEYS if k in fields), None)
        if key is None:
            return skip_sample(path, f"no image member ({', '.join(SHARD_IMAGE_KEYS)})")
        try:
            label = int(fields["cls"].decode().strip()) if "cls" in fields else -1
        except ValueError:
            return skip_sample(path, "cls member is not an integer")
        try:
            return self._prepare(path, fields[key], transform, generator), label, index
        except UnreadableImage as err:
            return skip_sample(path, err.reason)

    def _prepare(self, path: str, stored: bytes, transform: Transform, generator: torch.Generator) -> torch.Tensor:
        """What the worker makes of a sample's image bytes: the transformed image (device-side
        augmentation ships them encoded instead: `device_augment.DeviceAugmentShards`)."""
        return transform(load_image(stored, self.in_chans), generator)


def expand_braces(pattern: str) -> list[str]:
    """Expand `{000..127}` ranges (zero padding kept) and `{a,b}` lists, as in WebDataset; not nested."""
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        first, last = numeric.groups()
        padded = (first.startswith("0") and len(first) > 1) or (last.startswith("0") and len(last) > 1)
        width = max(len(first), len(last)) if padded else 0
        options = [str(i).zfill(width) for i in range(int(first), int(last) + 1)]
    else:
        options = body.split(",")
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [url for option in options for url in expand_braces(head + option + tail)]


def _tar_samples(url: str) -> Iterator[tuple[str, dict[str, bytes], list[str]]]:
    """(key, {extension: bytes}, oversized members) for consecutive tar members sharing a key
    (WebDataset's convention: the key is the member path up to the first dot of its file name).

    Only image and `cls` members are read, each only up to MAX_MEMBER_BYTES; the others (captions,
    metadata, anything) are streamed past unread. Nothing is ever written to disk, so member names
    like `../x` name samples and nothing else.
    """
    key, fields, oversized = None, {}, []
    with _open_shard(url) as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            directory, name = posixpath.split(member.name)
            stem, dot, extension = name.partition(".")
            if not member.isfile() or not dot or not stem:
                continue
            member_key = posixpath.join(directory, stem)
            if member_key != key:
                if key is not None:
                    yield key, fields, oversized
                key, fields, oversized = member_key, {}, []
            extension = extension.lower()
            if extension not in SHARD_IMAGE_KEYS and extension != "cls":
                continue
            if member.size > MAX_MEMBER_BYTES:
                oversized.append(f"{name} ({member.size} bytes)")
                continue
            fields[extension] = tar.extractfile(member).read()
    if key is not None:
        yield key, fields, oversized


def _open_shard(url: str) -> IO[bytes]:
    if "://" in url:
        import fsspec  # installed with torch; remote protocols need their own fsspec backend

        return fsspec.open(url, "rb").open()
    return open(url, "rb")

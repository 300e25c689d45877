"""Where images come from: folders, CSV lists, Fashion-MNIST, bundled photos and WebDataset shards.

A map-style source gives `(image, label)` for an index, with `label` a class id or -1 when unlabeled,
plus `paths` (how each sample is named in logs and skip lists) and `classes` (names, or None).
Decoding happens here and may raise `UnreadableImage`; `loader.TransformedDataset` turns that into a
`Skipped` marker. Shards are streamed, so `ShardSource` is an iterable that does both steps itself.
For device-side augmentation (`device_augment`), `stored(index)` gives a sample undecoded: the file's
bytes, or the image itself where nothing is encoded (Fashion-MNIST).
"""
from __future__ import annotations

import copy
import csv
import gzip
import io
import logging
import os
import posixpath
import re
import tarfile
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import IterableDataset, get_worker_info

from vitmae.data.decode import IMAGE_EXTENSIONS, ImageLike, UnreadableImage, convert_image, load_image
from vitmae.data.transforms import Transform, mix_seed, sample_generator

log = logging.getLogger(__name__)

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
# Photographs that ship inside the scikit-image wheel (skimage.data.data_dir); the other skimage.data
# images are downloaded on first use, which this project never does.
_PHOTO_FILES = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg",
)
# Sample numbers of shard k start at k * SHARD_STRIDE: unique and independent of the worker count.
SHARD_STRIDE = 1_000_000_000
SHARD_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp", "npy")
# A shard member larger than this is skipped (and listed) without being read: encoded images are far
# smaller, and raw 8-bit RGB at the pixel limit (decode.MAX_PIXELS) is 256 MiB.
MAX_MEMBER_BYTES = 256 * 2**20
# Integer labels are class ids 0..K-1 with K = max label + 1 classes, so a stray huge label would size
# a huge classifier: K may be at most MAX_CLASSES, and above DENSE_CLASSES at most DENSE_FACTOR times the
# number of distinct labels (ImageNet-1k's ids are always accepted, even in a subset of its classes).
MAX_CLASSES = 100_000
DENSE_CLASSES = 1000
DENSE_FACTOR = 10


class DataError(ValueError):
    """A data source the user named cannot be used; the message is one line."""


class Source(Protocol):
    paths: Sequence[str]
    classes: list[str] | None

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[ImageLike, int]: ...


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


class SharedEpoch:
    """An epoch number in shared memory: DataLoader workers (persistent ones too) see `set` at once."""

    def __init__(self) -> None:
        self._value = torch.zeros(1, dtype=torch.int64).share_memory_()

    def set(self, epoch: int) -> None:
        self._value[0] = epoch

    def get(self) -> int:
        return int(self._value[0])


class _FileSource:
    """Image files with labels; decoded on access."""

    def __init__(self, paths: list[str], labels: list[int], classes: list[str] | None, in_chans: int) -> None:
        self.paths, self.labels, self.classes, self.in_chans = paths, labels, classes, in_chans

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[ImageLike, int]:
        return load_image(self.paths[index], self.in_chans), self.labels[index]

    def stored(self, index: int) -> tuple[bytes, int]:
        """The file's bytes, undecoded, and its label."""
        path = self.paths[index]
        try:
            with open(path, "rb") as f:
                return f.read(), self.labels[index]
        except OSError as err:  # the reason load_image gives for the same file
            raise UnreadableImage(path, err.strerror or type(err).__name__) from err


class ImageFolderSource(_FileSource):
    """Every image file under `root`, recursively, in sorted order (hidden files and folders skipped).

    With `labeled=True` the first-level sub-folder is the class, as in torchvision's ImageFolder.
    """

    def __init__(self, root: str | Path, labeled: bool = False, in_chans: int = 3) -> None:
        root = Path(root)
        if not root.is_dir():
            raise DataError(f"image folder not found: {root}")
        repeats: Counter[str] = Counter()
        files = sorted(_scan_images(root, repeats))
        if repeats:
            log.warning("%s: %d symbolic link loop(s) not followed; %d folder(s) and %d file(s) reached again "
                        "through links, scanned once", root, repeats["loop"], repeats["folder"], repeats["file"])
        if not files:
            raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {root}")
        classes, labels = None, [-1] * len(files)
        if labeled:
            loose = [f for f in files if "/" not in f]
            if loose:
                raise DataError(f"{len(loose)} images directly under {root} (e.g. {loose[0]}) have no class folder")
            folder = [f.split("/", 1)[0] for f in files]
            classes = sorted(set(folder))
            class_id = {name: i for i, name in enumerate(classes)}
            labels = [class_id[name] for name in folder]
        super().__init__([str(root / f) for f in files], labels, classes, in_chans)


class ImageFilesSource(_FileSource):
    """The image files named, each folder among them standing for every image under it (sorted,
    recursively), unlabeled. A named file that is missing stays: reading it skips it, as any unreadable
    image."""

    def __init__(self, names: Sequence[str | Path], in_chans: int = 3) -> None:
        paths = []
        for name in map(Path, names):
            paths += [str(name / f) for f in sorted(_scan_images(name))] if name.is_dir() else [str(name)]
        super().__init__(paths, [-1] * len(paths), None, in_chans)


class CsvSource(_FileSource):
    """Rows of `path,label`; paths relative to the CSV's folder; UTF-8 text.

    A first row whose label is not an integer and whose path does not exist is a header (`path,label`,
    `filename,class`, ...). Integer labels are class ids (see class_count); any other labels are names,
    numbered in sorted order. A row with an empty label, or -1, is unlabeled.
    """

    def __init__(self, csv_path: str | Path, in_chans: int = 3) -> None:
        csv_path = Path(csv_path)
        if not csv_path.is_file():
            raise DataError(f"CSV file not found: {csv_path}")
        numbered = _csv_rows(csv_path)
        if numbered:
            first = numbered[0][1]
            label = first[1].strip() if len(first) > 1 else ""
            if not re.fullmatch(r"-?\d+", label) and not (csv_path.parent / first[0].strip()).exists():
                numbered = numbered[1:]
        if not numbered:
            raise DataError(f"no rows in {csv_path}")
        line_numbers = [line for line, _ in numbered]
        rows = [row for _, row in numbered]
        paths = [str(csv_path.parent / row[0].strip()) for row in rows]
        names = [row[1].strip() if len(row) > 1 else "" for row in rows]
        given = [n for n in names if n]
        classes = None
        if all(re.fullmatch(r"-?\d+", n) for n in given):
            labels = [int(n) if n else -1 for n in names]
            class_count(labels, f"{csv_path}", line_numbers)
        else:
            classes = sorted(set(given))
            class_id = {name: i for i, name in enumerate(classes)}
            labels = [class_id[n] if n else -1 for n in names]
        super().__init__(paths, labels, classes, in_chans)


def _csv_rows(csv_path: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of the non-empty rows of a UTF-8 CSV file (a byte-order mark is allowed)."""
    data = csv_path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataError(f"{csv_path} is not UTF-8 text: byte 0x{data[err.start]:02x} on line {line} "
                        "(save it as UTF-8)") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        return [(reader.line_num, row) for row in reader if row and row[0].strip()]
    except csv.Error as err:
        raise DataError(f"{csv_path}, line {reader.line_num}: {err}") from None


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


class FashionMNISTSource:
    """Fashion-MNIST from its IDX files (.gz or raw): 28x28 grayscale images and 10 classes."""

    classes = FASHION_MNIST_CLASSES

    def __init__(self, split: str = "train", root: str | Path | None = None, in_chans: int = 1) -> None:
        if split not in ("train", "test"):
            raise DataError(f"Fashion-MNIST split must be 'train' or 'test', not {split!r}")
        root = Path(root or FASHION_MNIST_ROOT)
        prefix = "train" if split == "train" else "t10k"
        self.images = _read_idx(root, f"{prefix}-images-idx3-ubyte", 2051)
        self.labels = _read_idx(root, f"{prefix}-labels-idx1-ubyte", 2049)
        if self.images.shape[1:] != (28, 28) or len(self.images) != len(self.labels):
            raise DataError(f"Fashion-MNIST files in {root} have unexpected shapes {self.images.shape}")
        self.in_chans = in_chans
        self.paths = [f"fashion-mnist/{split}/{i}" for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[ImageLike, int]:
        img = Image.fromarray(self.images[index])
        return convert_image(img, self.in_chans), int(self.labels[index])

    def stored(self, index: int) -> tuple[ImageLike, int]:
        """Nothing is encoded: the image itself (28x28, cheap) and its label."""
        return self[index]


class PhotosSource(_FileSource):
    """The photographs bundled with scikit-image (astronaut, coffee, chelsea, rocket, ...), unlabeled."""

    def __init__(self, in_chans: int = 3) -> None:
        from skimage.data import data_dir  # optional: only this source needs scikit-image

        paths = [os.path.join(data_dir, name) for name in _PHOTO_FILES]
        paths = [p for p in paths if os.path.isfile(p)]
        if not paths:
            raise DataError(f"no bundled photos in {data_dir}: reinstall scikit-image")
        super().__init__(paths, [-1] * len(paths), None, in_chans)


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


def build_source(
    spec: str, split: str = "train", labeled: bool = False, in_chans: int | None = None
) -> Source | ShardSource:
    """A source from a spec: 'fashion-mnist', 'photos', a folder, a .csv file or a .tar shard pattern.

    For a folder holding a sub-folder named `split` (ImageNet's train/ and val/), that sub-folder is
    used, and `labeled` takes class names from its sub-folders; CSV files and shards carry labels when
    they have them. `in_chans` defaults to the data's own (1 for Fashion-MNIST, 3 otherwise).
    """
    if spec == "fashion-mnist":
        if split not in ("train", "val", "test"):
            raise DataError(f"unknown split {split!r} for fashion-mnist (train, val or test)")
        return FashionMNISTSource("train" if split == "train" else "test", in_chans=in_chans or 1)
    in_chans = in_chans or 3
    if spec == "photos":
        return PhotosSource(in_chans)
    if ".tar" in spec:
        return ShardSource(spec, in_chans)
    if spec.lower().endswith(".csv"):
        return CsvSource(spec, in_chans)
    if os.path.isdir(spec):
        root = os.path.join(spec, split)
        return ImageFolderSource(root if os.path.isdir(root) else spec, labeled, in_chans)
    raise DataError(
        f"data source {spec!r} is not 'fashion-mnist', 'photos', an existing folder, a .csv file "
        "or a .tar shard pattern"
    )


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


def _scan_images(root: Path, repeats: Counter[str] | None = None) -> Iterator[str]:
    """Image files under root as '/'-separated relative paths; follows links, skips hidden entries.

    Each real folder is entered once and each real file yielded once (by device and inode): a link
    loop would otherwise repeat every image below it, and two loops multiply. Folders reached again
    are counted in `repeats` ('loop' when the link points at a folder it is in, else 'folder'),
    files reached again under 'file'.
    """
    repeats = Counter() if repeats is None else repeats
    top = os.stat(root)
    seen_folders, seen_files = {(top.st_dev, top.st_ino)}, set()
    stack = [("", ((top.st_dev, top.st_ino),))]
    while stack:
        relative, ancestors = stack.pop()
        try:
            with os.scandir(root / relative) as scan:
                entries = sorted(scan, key=lambda e: e.name)
        except OSError as err:
            log.warning("cannot list folder %s: %s", root / relative, err.strerror or err)
            continue
        folders = []
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = f"{relative}/{entry.name}" if relative else entry.name
            try:
                if entry.is_dir():  # follows a link to a folder
                    info = entry.stat()
                    identity = (info.st_dev, info.st_ino)
                    if identity in seen_folders:
                        repeats["loop" if identity in ancestors else "folder"] += 1
                    else:
                        seen_folders.add(identity)
                        folders.append((path, (*ancestors, identity)))
                    continue
                if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                # a plain file lives on its folder's device; only a link needs a stat of its target
                info = entry.stat() if entry.is_symlink() else None
                identity = (info.st_dev, info.st_ino) if info else (ancestors[-1][0], entry.inode())
            except OSError:  # a broken link: listed, and the loader reports it as unreadable
                yield path
                continue
            if identity in seen_files:
                repeats["file"] += 1
            else:
                seen_files.add(identity)
                yield path
        stack.extend(reversed(folders))


def _read_idx(root: Path, name: str, magic: int) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format): big-endian magic, dimension sizes, data."""
    for path in (root / f"{name}.gz", root / name):
        if path.is_file():
            break
    else:
        raise DataError(
            f"Fashion-MNIST not found in {root}: run `apt-get install dataset-fashion-mnist` "
            "(or `make demo`, which installs it)"
        )
    with (gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")) as f:
        data = f.read()
    if len(data) < 4 or int.from_bytes(data[:4], "big") != magic:
        raise DataError(f"{path} is not an IDX file (magic number {magic} expected)")
    ndim = magic & 0xFF
    shape = tuple(int(n) for n in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path} is truncated: {array.size} values for shape {shape}")
    return array.reshape(shape)


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

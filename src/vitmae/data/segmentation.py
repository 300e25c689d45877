"""Semantic-segmentation sources: `(image, index mask)` pairs, the mask an (H, W) integer array of class
indices (the ignore index, 255 by default, marks pixels left out of the loss and the metrics).

A folder holds `DIR/{train,val}/{images,masks}/`, image and mask matched by their path relative to those
folders without the extension (`images/a/x.jpg` pairs with `masks/a/x.png`), and optionally
`DIR/classes.txt`, one class name per line (line k names index k), UTF-8. Masks are index images, one
class index per pixel: palette PNGs read as their indices (as VOC ships them), 8- or 16-bit grayscale,
32-bit integer, 1-bit, or 32-bit float holding whole numbers (TIFF).

How a mask's values become the class ids training reads (`SegmentationFolderSource.labels`), in order:
1. `mask_values` (optional, a list of ints, recorded by a run): value `mask_values[k]` is class k, any
   other value the ignore index. `BINARY_MASK_VALUES` (0, 255) reads hand-made binary masks, whose
   foreground is 255, as background 0 and object 1. Without it a value is its class id.
2. `reduce_zero` (ADE20K's convention): 0 is ignored, class k becomes k - 1.
3. A value that is then neither a class nor the ignore index skips the pair (below).
`mask_scan.scan_masks` reads every mask the same way before training, to catch binary masks read with
255 as the ignore index, classes no mask holds and masks of values past the classes (issue 25).

Bad input, and where it is caught:
- at scan time, a `DataError` (one line), since the whole pairing is wrong: a missing folder, an image
  without a mask or a mask without an image, two files with one stem, a split with no pair; no class
  count, a classes.txt that is not UTF-8 text or names more than MAX_DENSE_CLASSES classes (or a number
  of classes outside 1..MAX_DENSE_CLASSES); mask values that are not distinct whole numbers, or that
  give another number of classes than classes.txt names;
- on reading, the pair is skipped and listed with its reason like any unreadable image (checking every
  mask up front would read the whole dataset once more): a mask whose size differs from its image's, a
  negative value or one >= the number of classes that is not the ignore index (never fed to the loss),
  a colour mask (RGB, RGBA, ...), a float mask of fractions, a mask over the pixel limit, an unreadable
  file.
`make-dataset fashion-scenes` writes an example of the layout.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from vitmae.data.decode import ImageLike, UnreadableImage, load_image, pixel_limit_problem
from vitmae.data.files import scan_images, utf8_text
from vitmae.data.loader import Batch, JointTransform, readable
from vitmae.data.source import MAX_DENSE_CLASSES, DataError

__all__ = ["BINARY_MASK_VALUES", "PALETTE", "SegmentationFolderSource", "SegmentationTransform", "collate_masks",
           "map_mask_values", "read_index_mask", "reduce_zero_label", "write_index_mask"]

_INDEX_MODES = ("P", "L", "1", "I;16", "I;16B", "I;16L", "I", "F")
# classes.txt holds at most MAX_DENSE_CLASSES names of this many bytes on average
CLASS_NAME_BYTES = 256
# hand-made binary masks: 0 background, 255 the object (--binary-masks reads them as classes 0 and 1)
BINARY_MASK_VALUES = (0, 255)
# a mask value is an int32 (the widest integer mask mode, and the float masks read as whole numbers)
MAX_MASK_VALUE = 2**31 - 1


def _voc_colour(index: int) -> list[int]:
    """PASCAL VOC's colour of an index: its bits spread over the high bits of red, green and blue."""
    rgb = [0, 0, 0]
    for shift in range(7, -1, -1):
        for channel in range(3):
            rgb[channel] |= ((index >> channel) & 1) << shift
        index >>= 3
    return rgb


# The colours of index masks (the palette of the PNGs make-dataset and predict write), 256 RGB triples:
# eleven distinct ones for 0-10 (0 black: fashion-scenes' background), then VOC's colour map.
PALETTE = [0, 0, 0, 230, 25, 75, 60, 180, 75, 255, 225, 25, 0, 130, 200, 245, 130, 48, 145, 30, 180,
           70, 240, 240, 240, 50, 230, 210, 245, 60, 250, 190, 212,
           *(v for i in range(11, 256) for v in _voc_colour(i))]


def read_index_mask(path: str) -> np.ndarray:
    """An index mask file as (H, W) integers; raises UnreadableImage for a file that is not one."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit is checked below
            with Image.open(path) as img:
                if problem := pixel_limit_problem(*img.size):  # from the header, before decoding
                    raise UnreadableImage(path, f"the mask is {problem}")
                img.load()
                mode = img.mode
                array = np.asarray(img)
    except UnreadableImage:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as err:
        raise UnreadableImage(path, f"unreadable mask: {err}") from err
    if mode not in _INDEX_MODES:
        raise UnreadableImage(path, f"the mask is a {mode} image: masks must be index PNGs (one class index per "
                                    "pixel: grayscale or palette), not colour pictures")
    if mode == "F" and not (np.isfinite(array).all() and (array == np.round(array)).all()
                            and np.abs(array).max(initial=0) < 2**31):
        raise UnreadableImage(path, "the mask is a float image of values that are not whole numbers: masks hold "
                                    "one class index per pixel")
    return array.astype(np.int64)


def write_index_mask(mask: np.ndarray, path: str | Path) -> None:
    """Class indices (H, W) as a palette PNG (PALETTE: the values are the indices, the palette only shows
    them), as VOC ships masks; 16-bit grayscale where a value passes 255. `read_index_mask` reads either."""
    if mask.max(initial=0) > 255:
        Image.fromarray(mask.astype(np.uint16)).save(path)
        return
    image = Image.fromarray(mask.astype(np.uint8)).convert("P")  # "L" -> "P" keeps the values as indices
    image.putpalette(PALETTE)
    image.save(path)


def reduce_zero_label(mask: np.ndarray, ignore_index: int = 255) -> np.ndarray:
    """ADE20K's convention, as mmsegmentation applies it: 0 (other) is ignored, class k becomes k - 1."""
    return np.where(mask == 0, ignore_index, np.where(mask == ignore_index, ignore_index, mask - 1))


def map_mask_values(mask: np.ndarray, values: Sequence[int], ignore_index: int = 255) -> np.ndarray:
    """`values[k]` read as class k, any other value as the ignore index (any shape, any integers)."""
    keys = np.asarray(values, dtype=np.int64)
    order = np.argsort(keys)
    where = np.searchsorted(keys[order], mask).clip(max=len(keys) - 1)
    return np.where(keys[order][where] == mask, order[where], ignore_index)


def checked_mask_values(values: Sequence[int], reduce_zero: bool = False) -> list[int]:
    """`values` as a plain list of ints (what a run records); DataError unless they are distinct whole
    numbers 0..MAX_MASK_VALUE that give 1 to MAX_DENSE_CLASSES classes (one fewer with reduce-zero)."""
    values, least = list(values), 1 + int(reduce_zero)
    if (not least <= len(values) <= MAX_DENSE_CLASSES + least - 1 or len(set(values)) != len(values)
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v <= MAX_MASK_VALUE
                       for v in values)):
        then = ", then reduce-zero" if reduce_zero else ""
        raise DataError(f"mask values must be {least} to {MAX_DENSE_CLASSES + least - 1} distinct whole numbers 0 "
                        f"to {MAX_MASK_VALUE} (value k read as class k{then}), not {_listed(values)}")
    return [int(v) for v in values]


def _listed(values: Sequence, shown: int = 8) -> str:
    """'0, 128, 255', or the first `shown` values and how many more."""
    more = f", ... ({len(values) - shown} more)" if len(values) > shown else ""
    return ", ".join(repr(v) for v in values[:shown]) + more if values else "none"


class SegmentationFolderSource:
    """The pairs of `root/split/{images,masks}` (see the module's docstring for the layout, how a mask's
    values become class ids and the checks). `mask_values` is kept as a list of ints, for a run's record."""

    def __init__(self, root: str | Path, split: str = "train", num_classes: int | None = None,
                 ignore_index: int = 255, reduce_zero: bool = False, in_chans: int = 3,
                 mask_values: Sequence[int] | None = None) -> None:
        root = Path(root)
        images_dir, masks_dir = root / split / "images", root / split / "masks"
        for folder in (images_dir, masks_dir):
            if not folder.is_dir():
                raise DataError(f"segmentation data needs {folder}/ (layout: DIR/{{train,val}}/{{images,masks}}/)")
        images, masks = _by_stem(images_dir), _by_stem(masks_dir)
        for have, lack, what in ((images, masks, "image"), (masks, images, "mask")):
            alone = sorted(set(have) - set(lack))
            if alone:
                other = "mask" if what == "image" else "image"
                raise DataError(f"{len(alone)} {what}s in {root / split} have no {other} of the same name, e.g. "
                                f"{have[alone[0]]}")
        if not images:
            raise DataError(f"no image and mask pairs in {root / split} (its images/ and masks/ are empty)")
        if num_classes is not None and not 1 <= num_classes <= MAX_DENSE_CLASSES:
            raise DataError(f"the number of classes must be 1 to {MAX_DENSE_CLASSES}, not {num_classes}")
        classes_file = root / "classes.txt"
        self.classes: list[str] | None = None
        if classes_file.is_file():
            self.classes = read_class_names(classes_file)
            if num_classes is not None and num_classes != len(self.classes):
                raise DataError(f"{classes_file} names {len(self.classes)} classes, not {num_classes}")
            num_classes = len(self.classes)
        self.mask_values = None if mask_values is None else checked_mask_values(mask_values, reduce_zero)
        if self.mask_values is not None:
            mapped = len(self.mask_values) - int(reduce_zero)
            if num_classes not in (None, mapped):
                given = f"{classes_file} names" if self.classes else "the number of classes is"
                after = " after reduce-zero" if reduce_zero else ""
                raise DataError(f"the mask values {_listed(self.mask_values)} give {mapped} classes{after}, but "
                                f"{given} {num_classes}: list a value per class")
            num_classes = mapped
        if not num_classes:
            raise DataError(f"no {classes_file} (a class name per line): write one or give the number of classes")
        stems = sorted(images)
        self.paths = [str(images_dir / images[s]) for s in stems]
        self.mask_paths = [str(masks_dir / masks[s]) for s in stems]
        self.split, self.num_classes, self.ignore_index, self.reduce_zero, self.in_chans = (
            split, num_classes, ignore_index, reduce_zero, in_chans)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[ImageLike, np.ndarray]:
        image = load_image(self.paths[index], self.in_chans)
        mask_path = self.mask_paths[index]
        mask = read_index_mask(mask_path)
        size = image.shape[1::-1] if isinstance(image, np.ndarray) else image.size
        if mask.shape[::-1] != tuple(size):
            raise UnreadableImage(self.paths[index], f"its mask {mask_path} is {mask.shape[1]}x{mask.shape[0]}, "
                                                     f"the image {size[0]}x{size[1]}")
        mask = self.labels(mask)
        if problem := self.label_problem(mask):
            raise UnreadableImage(self.paths[index], f"its mask {mask_path} {problem}")
        return image, mask

    def labels(self, values: np.ndarray) -> np.ndarray:
        """The class ids (or the ignore index) training reads from a mask file's values, any shape: the
        mask values' mapping, then reduce-zero."""
        if self.mask_values is not None:
            values = map_mask_values(values, self.mask_values, self.ignore_index)
        return reduce_zero_label(values, self.ignore_index) if self.reduce_zero else values

    def not_classes(self, labels: np.ndarray) -> np.ndarray:
        """Where `labels` (`labels`' result) hold a value that is neither a class nor the ignore index."""
        return ((labels < 0) | (labels >= self.num_classes)) & (labels != self.ignore_index)

    def label_problem(self, labels: np.ndarray) -> str | None:
        """Why training cannot read `labels` (`labels`' result): a value that is neither a class nor the
        ignore index (the lowest where one is negative, else the highest), or None."""
        bad = self.not_classes(labels)
        if not bad.any():
            return None
        value = int(labels[bad].min()) if labels.min() < 0 else int(labels[bad].max())
        return f"has value {value}, not a class (0-{self.num_classes - 1}) nor the ignore index {self.ignore_index}"


def read_class_names(path: Path) -> list[str]:
    """The class names of a classes.txt: one a line, UTF-8, blank lines skipped; DataError (one line) for a
    file that is not such a list or names more than MAX_DENSE_CLASSES."""
    limit = MAX_DENSE_CLASSES * CLASS_NAME_BYTES
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DataError(f"{path} is over {limit} bytes: not a list of at most {MAX_DENSE_CLASSES} class names")
    if b"\0" in data:
        line = data[: data.index(b"\0")].count(b"\n") + 1
        raise DataError(f"{path} holds binary data (a NUL byte on line {line}), not a class name per line")
    names = [line.strip() for line in utf8_text(path, data).splitlines() if line.strip()]
    if not names:
        raise DataError(f"{path} names no class")
    if len(names) > MAX_DENSE_CLASSES:
        raise DataError(f"{path} names {len(names)} classes, over the limit of {MAX_DENSE_CLASSES}")
    return names


def _by_stem(folder: Path) -> dict[str, str]:
    """{relative path without extension: relative path} of the image files under `folder`."""
    found: dict[str, str] = {}
    for name in scan_images(folder):
        stem = os.path.splitext(name)[0]
        if stem in found:
            raise DataError(f"two files in {folder} share the name {stem}: {found[stem]} and {name}")
        found[stem] = name
    return found


class SegmentationTransform(JointTransform):
    """Image and index mask together, mmseg's training pipeline: random resize by 0.5-2.0, random crop of
    `crop` px (padded with 0 after normalisation and the ignore index where the image is smaller), flip,
    and for RGB images photometric jitter (brightness, contrast, saturation; the mask untouched). With
    `train=False`: only the tensors and the normalisation. Every draw comes from `generator`."""

    def __init__(self, crop: int, mean, std, train: bool = True, scale=(0.5, 2.0), hflip: float = 0.5,
                 ignore_index: int = 255) -> None:
        self.crop, self.train, self.scale, self.hflip, self.ignore_index = crop, train, scale, hflip, ignore_index
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: ImageLike, mask: np.ndarray, generator: torch.Generator):
        x = torch.from_numpy(np.array(image, dtype=np.float32))
        x = (x[None] if x.ndim == 2 else x.permute(2, 0, 1)) / (1.0 if isinstance(image, np.ndarray) else 255.0)
        y = torch.from_numpy(np.asarray(mask, dtype=np.int64))
        if self.train:
            x, y = self._augment(x, y, generator)
        x = (x - self.mean) / self.std
        if self.train:
            x, y = self._crop(x, y, generator)
        return x, y

    def _augment(self, x, y, generator):
        def uniform(low: float, high: float) -> float:
            return low + (high - low) * torch.rand((), generator=generator).item()

        ratio = uniform(*self.scale)
        size = [max(1, round(s * ratio)) for s in x.shape[-2:]]
        x = F.interpolate(x[None], size=size, mode="bilinear", align_corners=False, antialias=ratio < 1)[0]
        y = F.interpolate(y[None, None].float(), size=size, mode="nearest")[0, 0].long()
        if torch.rand((), generator=generator).item() < self.hflip:
            x, y = x.flip(-1), y.flip(-1)
        if x.shape[0] == 3:  # photometric jitter of mmseg's PhotoMetricDistortion, RGB only
            x = (x * uniform(0.875, 1.125)).clamp(0, 1)  # brightness
            gray = x.mean(dim=(-3, -2, -1), keepdim=True)
            x = (gray + (x - gray) * uniform(0.5, 1.5)).clamp(0, 1)  # contrast
            luma = (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2])[None]
            x = (luma + (x - luma) * uniform(0.5, 1.5)).clamp(0, 1)  # saturation
        return x, y

    def _crop(self, x, y, generator):
        h, w = x.shape[-2:]
        top = int(torch.randint(max(h - self.crop, 0) + 1, (), generator=generator))
        left = int(torch.randint(max(w - self.crop, 0) + 1, (), generator=generator))
        x, y = x[:, top:top + self.crop, left:left + self.crop], y[top:top + self.crop, left:left + self.crop]
        pad = (0, self.crop - x.shape[-1], 0, self.crop - x.shape[-2])
        return F.pad(x, pad, value=0.0), F.pad(y, pad, value=self.ignore_index)


def collate_masks(samples) -> Batch:
    """Stack images (N, C, H, W) and masks (N, H, W) long; skipped samples are listed."""
    good, skipped = readable(samples)
    if not good:
        return Batch(torch.empty(0), torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), skipped)
    return Batch(images=torch.stack([s[0] for s in good]), targets=torch.stack([s[1] for s in good]),
                 indices=torch.tensor([s[2] for s in good]), skipped=skipped)

"""One pass over a segmentation split's masks before training (issue 25): the values they hold, the pixels
each class gets, the masks training will skip, and the signs that the masks are read wrongly.

`scan_masks(source)` reads every mask of a `SegmentationFolderSource` with the source's own readers
(`read_index_mask`, then `source.labels`: the mask values' mapping and reduce-zero, then
`source.label_problem`), one file at a time, keeping counts only; the images are not opened (a mask of
another size than its image is found when the pair is read). Its `MaskScan` gives:

- `refusal()`: the one line a run stops on (exit 2), or None. Unless `mask_values` says how the masks are
  read: masks holding only 0 and one value that is no class (hand-made binary masks, saved as 0/255 and
  read with 255 ignored, or 0/65535 and skipped); no mask of the split that can be read as classes (with
  mask values too); a class that no mask holds while the ignore index is in the masks; the ignore index
  covering more pixels than all the classes together (read as a class, it would hold over half the
  labelled pixels). Each line says what to pass: `--binary-masks`, `--mask-values` (the values read now,
  to go on as now: sparse labels, a subset without some class) or `--ignore-index`. A run asks it of its
  training split; of the validation split it takes the warnings only.
- `warnings()`: one line each, for the run's log: the classes no mask of the split holds; the masks
  training will skip (values that are no class, unreadable files), counted, with a few examples, in
  place of a warning per file (`mark_reported(scan.skipped_paths)` then keeps training from repeating
  them one by one).

`empty_classes_warning(pixels, names, where)` is that line for classes without a pixel from any count of
pixels per class: the scan's, or the ground truth of an evaluation.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from vitmae.data.decode import UnreadableImage
from vitmae.data.segmentation import BINARY_MASK_VALUES, SegmentationFolderSource, read_index_mask
from vitmae.data.source import MAX_DENSE_CLASSES

__all__ = ["MaskScan", "empty_classes", "empty_classes_warning", "scan_masks"]

EXAMPLES = 3  # skipped masks named in a line
# distinct file values counted one by one; the pixels of any further value are summed in `other_pixels`
MAX_SCANNED_VALUES = 2 * MAX_DENSE_CLASSES
SPLIT_NAMES = {"train": "training", "val": "validation"}  # how lines name a split's masks
NAMES_SHOWN = 5  # classes named in a line
LISTED_VALUES = 32  # a --mask-values suggestion spelled out in full up to this many values


@dataclass
class MaskScan:
    """The counts of one split's masks (see the module's docstring). Pixel counts are of the masks
    training can read; `value_pixels` and `value_files` of every mask that could be decoded."""

    split: str
    classes: list[str] | None
    num_classes: int
    ignore_index: int
    mask_values: list[int] | None
    reduce_zero: bool
    masks: int = 0  # mask files
    value_pixels: dict[int, int] = field(default_factory=dict)  # file value -> pixels
    value_files: dict[int, int] = field(default_factory=dict)  # file value -> masks holding it
    other_pixels: int = 0  # pixels of values past the first MAX_SCANNED_VALUES distinct ones
    class_pixels: np.ndarray = field(init=False)  # (num_classes,) int64: pixels per class as trained on
    ignored_pixels: int = 0  # pixels training ignores (after the mapping and reduce-zero)
    ignore_value_pixels: int = 0  # pixels whose file value is the ignore index
    out_of_range: int = 0  # masks holding a value that is neither a class nor the ignore index
    out_of_range_values: tuple[int, int] | None = None  # the lowest and highest such value
    unreadable: int = 0  # masks that could not be decoded, or not as class indices
    examples: list[str] = field(default_factory=list)  # the first EXAMPLES skipped masks, why
    skipped_paths: list[str] = field(default_factory=list)  # the skipped pairs' images, as training names them

    def __post_init__(self) -> None:
        self.class_pixels = np.zeros(self.num_classes, dtype=np.int64)

    @property
    def where(self) -> str:
        return SPLIT_NAMES.get(self.split, self.split)

    @property
    def usable(self) -> int:
        return self.masks - self.out_of_range - self.unreadable

    def empty_classes(self) -> list[int]:
        return empty_classes(self.class_pixels)

    def refusal(self) -> str | None:
        """The line a run stops on, or None (see the module's docstring)."""
        if binary := self._binary_masks():
            return binary
        if not self.usable:
            return f"none of the {self.masks} {self.where} masks can be read as classes: {self._skips()}"
        if self.mask_values is not None:
            return None
        ii, k, labelled = self.ignore_index, self.num_classes, int(self.class_pixels.sum())
        as_now = self._as_now()
        share = _share(self.ignore_value_pixels, labelled + self.ignored_pixels)
        if (empty := self.empty_classes()) and self.ignore_value_pixels:
            return (f"no {self.where} mask holds {self._named(empty)} of the {k} classes, while {share} of their "
                    f"pixels hold {ii}, the ignore index: if {ii} is a class, give the value of each class with "
                    f"--mask-values (value k read as class k), or choose another --ignore-index; if not, {as_now}")
        if self.ignore_value_pixels > labelled:
            return (f"{ii}, the ignore index, covers {share} of the {self.where} masks' pixels, more than all "
                    f"{k} classes together: if it is a class, give the value of each class with --mask-values "
                    f"(value k read as class k), or choose another --ignore-index; if the masks label only part "
                    f"of each image, {as_now}")
        return None

    def _binary_masks(self) -> str | None:
        """The refusal of masks holding only 0 and one value v that is no class (the ignore index, 255
        or 65535 of hand-made binary masks) read without mask values, or None."""
        values = set(self.value_pixels)
        if (self.mask_values is not None or self.reduce_zero or self.num_classes < 2 or self.other_pixels
                or len(values) != 2 or 0 not in values or max(values) < self.num_classes):
            return None
        v, k = max(values), self.num_classes
        if v == self.ignore_index:
            lost = f"{v} is the ignore index, so {self._named(range(1, k))} would get no pixels"
            other = ", or --ignore-index to choose another"
        else:
            lost = (f"{v} is neither a class (0-{k - 1}) nor the ignore index {self.ignore_index}, so every mask "
                    "would be skipped")
            other = ""
        if k > 2:
            fix = "--mask-values to give the value of each class (value k read as class k)"
        elif v == BINARY_MASK_VALUES[1]:
            fix = f"--binary-masks to read {v} as class 1"
        else:
            fix = f"--mask-values 0,{v} to read {v} as class 1"
        classes = f"{'classes.txt names' if self.classes else 'there are'} {k} classes"
        return (f"{self.where} masks hold only 0 and {v} ({self.masks - self.unreadable} files) and {classes}: "
                f"{lost}; pass {fix}{other}")

    def warnings(self) -> list[str]:
        """Lines for the run's log: the classes without a pixel, the masks training will skip."""
        lines = []
        if self.usable and (empty := empty_classes_warning(self.class_pixels, self.classes, self.where)):
            lines.append(empty)
        if self.usable and self.usable < self.masks:
            lines.append(f"{self.masks - self.usable} of the {self.masks} {self.where} masks will be skipped: "
                         f"{self._skips()}")
        return lines

    def _skips(self) -> str:
        """'k hold values ..., u are unreadable; e.g. ...': why masks are skipped, with examples."""
        parts = []
        if self.out_of_range:
            low, high = self.out_of_range_values
            values = f"{low}" if low == high else f"{low} to {high}"
            hold = "holds" if self.out_of_range == 1 else "hold"
            parts.append(f"{self.out_of_range} {hold} values that are neither a class (0-{self.num_classes - 1}) "
                         f"nor the ignore index {self.ignore_index} ({values})")
        if self.unreadable:
            parts.append(f"{self.unreadable} {'is' if self.unreadable == 1 else 'are'} unreadable")
        return f"{', '.join(parts)}; e.g. {'; '.join(self.examples)}"

    def _named(self, ids: Sequence[int]) -> str:
        return _class_names(ids, self.classes)

    def _as_now(self) -> str:
        """'pass --mask-values 0,1,2 to train as now': the values that read the masks as now (each class
        its own value; with reduce-zero, 0 too)."""
        count = self.num_classes + int(self.reduce_zero)
        values = ",".join(map(str, range(count))) if count <= LISTED_VALUES else f"with each value 0 to {count - 1}"
        return f"pass --mask-values {values} to train as now"


def scan_masks(source: SegmentationFolderSource) -> MaskScan:
    """Every mask of `source` read as training reads it, counted (see the module's docstring)."""
    scan = MaskScan(source.split, source.classes, source.num_classes, source.ignore_index, source.mask_values,
                    source.reduce_zero)
    for image_path, mask_path in zip(source.paths, source.mask_paths):
        scan.masks += 1
        try:
            values, pixels = _histogram(read_index_mask(mask_path))
        except UnreadableImage as err:
            scan.unreadable += 1
            _skipped(scan, image_path, f"{mask_path}: {err.reason}")
            continue
        _count_values(scan, values, pixels)
        labels = source.labels(values)
        if problem := source.label_problem(labels):
            bad = labels[source.not_classes(labels)]
            low, high = scan.out_of_range_values or (int(bad.min()), int(bad.max()))
            scan.out_of_range_values = (min(low, int(bad.min())), max(high, int(bad.max())))
            scan.out_of_range += 1
            _skipped(scan, image_path, f"{mask_path} {problem}")
            continue
        labelled = labels != source.ignore_index
        np.add.at(scan.class_pixels, labels[labelled], pixels[labelled])
        scan.ignored_pixels += int(pixels[~labelled].sum())
        scan.ignore_value_pixels += int(pixels[values == source.ignore_index].sum())
    return scan


def _histogram(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct values of a mask and their pixel counts (a bincount where the values allow one)."""
    flat = mask.ravel()
    if flat.size and flat.min() >= 0 and flat.max() < 2**16:  # 8- and 16-bit masks: linear time
        counts = np.bincount(flat)
        values = np.flatnonzero(counts)
        return values, counts[values]
    return np.unique(flat, return_counts=True)


def _count_values(scan: MaskScan, values: np.ndarray, pixels: np.ndarray) -> None:
    """Add a mask's histogram to the scan's, at most MAX_SCANNED_VALUES distinct values."""
    for value, count in zip(values.tolist(), pixels.tolist()):
        if value in scan.value_pixels or len(scan.value_pixels) < MAX_SCANNED_VALUES:
            scan.value_pixels[value] = scan.value_pixels.get(value, 0) + count
            scan.value_files[value] = scan.value_files.get(value, 0) + 1
        else:
            scan.other_pixels += count


def _skipped(scan: MaskScan, image_path: str, why: str) -> None:
    scan.skipped_paths.append(image_path)
    if len(scan.examples) < EXAMPLES:
        scan.examples.append(why)


def _share(part: int, whole: int) -> str:
    """'37%' (and never '0%' or '100%' for a part that is not none or all)."""
    if not 0 < part < whole:
        return f"{100 if part and part == whole else 0}%"
    return f"{min(max(round(100 * part / whole), 1), 99)}%"


def _class_names(ids: Sequence[int], names: list[str] | None) -> str:
    """"'cat' (1), 'dog' (2)", or 'class 1, class 2' without names; the first NAMES_SHOWN and how many more."""
    shown = [f"{names[c]!r} ({c})" if names else f"class {c}" for c in list(ids)[:NAMES_SHOWN]]
    more = f" and {len(ids) - NAMES_SHOWN} more" if len(ids) > NAMES_SHOWN else ""
    return ", ".join(shown) + more


def empty_classes(pixels: Sequence[int] | np.ndarray) -> list[int]:
    """The classes with no pixel in `pixels` (a count per class)."""
    return [int(c) for c in np.flatnonzero(np.asarray(pixels) == 0)]


def empty_classes_warning(pixels: Sequence[int] | np.ndarray, names: list[str] | None, where: str) -> str | None:
    """The line naming the classes without a pixel in `where` ("validation", say), or None when every
    class has one. `pixels`: a count per class, as `MaskScan.class_pixels` or the ground truth an
    evaluation counted (`SegmentationMetrics.areas[2]`)."""
    empty = empty_classes(pixels)
    if not empty:
        return None
    have = "has" if len(empty) == 1 else "have"
    return (f"{len(empty)} of the {len(pixels)} classes {have} no pixel in the {where} masks: "
            f"{_class_names(empty, names)}")

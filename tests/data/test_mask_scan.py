"""The scan of a segmentation split's masks (issue 25): hand-made binary masks refused with a hint or read
with the mapping, classes no mask holds, an ignore index that would dominate, values past the classes
summarised in one line, and a mapping recorded and read back identically. Real PNGs in each mode."""
from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from vitmae.data import Skipped, build_dataset, open_source
from vitmae.data import mask_scan
from vitmae.data.mask_scan import empty_classes_warning, scan_masks
from vitmae.data.segmentation import BINARY_MASK_VALUES, PALETTE, SegmentationTransform
from vitmae.data.source import mark_reported

SIZE = 16


def _write(root, split, masks, mode="L", classes=("background", "object")):
    """`masks` (arrays) as `root/split/masks/{i}.png` in PIL `mode` ("L", "P" or "I;16") beside a grey
    image each, and `classes` as root/classes.txt."""
    if classes:
        (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    for i, mask in enumerate(masks):
        mask = np.asarray(mask)
        Image.fromarray(np.full((*mask.shape, 3), 100, np.uint8)).save(root / split / "images" / f"{i}.jpg")
        if mode == "I;16":
            img = Image.fromarray(mask.astype(np.uint16))
        else:
            img = Image.fromarray(mask.astype(np.uint8))
            if mode == "P":
                img = img.convert("P")
                img.putpalette(PALETTE)
        assert img.mode == mode
        img.save(root / split / "masks" / f"{i}.png")


def _objects(count, value=255, seed=0):
    """`count` masks of a random rectangle of `value` on 0, as a hand-made foreground mask."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        mask = np.zeros((SIZE, SIZE), np.int64)
        y, x = rng.integers(0, SIZE // 2, size=2)
        h, w = rng.integers(3, SIZE // 2, size=2)
        mask[y:y + h, x:x + w] = value
        masks.append(mask)
    return masks


def _targets(source):
    """Every sample's (image, mask) tensors as evaluation reads them."""
    dataset = build_dataset(source, SegmentationTransform(SIZE, [0.5] * 3, [0.25] * 3, train=False))
    return [dataset[i][:2] for i in range(len(dataset))]


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_binary_masks_with_two_classes_are_refused_with_the_hint(tmp_path, mode):
    _write(tmp_path, "train", _objects(6), mode)
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal() == (
        "training masks hold only 0 and 255 (6 files) and classes.txt names 2 classes: 255 is the ignore index, "
        "so 'object' (1) would get no pixels; pass --binary-masks to read 255 as class 1, or --ignore-index to "
        "choose another")
    assert scan.value_files == {0: 6, 255: 6} and scan.class_pixels[1] == 0


@pytest.mark.parametrize("mode", ["L", "P", "I;16"])
def test_binary_masks_read_as_class_1_with_the_mapping(tmp_path, mode):
    masks = _objects(6)
    _write(tmp_path, "train", masks, mode)
    source = open_source(str(tmp_path), "train", "mask", mask_values=BINARY_MASK_VALUES)
    scan = scan_masks(source)
    assert scan.refusal() is None and scan.warnings() == []
    foreground = sum(int((m == 255).sum()) for m in masks)
    assert scan.class_pixels.tolist() == [6 * SIZE * SIZE - foreground, foreground]
    for i, mask in enumerate(masks):
        assert source[i][1].tolist() == (mask == 255).astype(int).tolist()


def test_binary_masks_of_another_value_name_it(tmp_path):
    """16-bit masks saved as 0/65535: every mask would be skipped, and the line says how to read them."""
    _write(tmp_path, "train", _objects(3, value=65535), "I;16")
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal() == (
        "training masks hold only 0 and 65535 (3 files) and classes.txt names 2 classes: 65535 is neither a class "
        "(0-1) nor the ignore index 255, so every mask would be skipped; pass --mask-values 0,65535 to read 65535 "
        "as class 1")
    mapped = scan_masks(open_source(str(tmp_path), "train", "mask", mask_values=[0, 65535]))
    assert mapped.refusal() is None and mapped.class_pixels.all()


def test_binary_masks_with_more_classes_ask_for_the_values(tmp_path):
    _write(tmp_path, "train", _objects(2), classes=("background", "cat", "dog"))
    (tmp_path / "classes.txt").unlink()
    scan = scan_masks(open_source(str(tmp_path), "train", "mask", num_classes=3))
    assert scan.refusal() == (
        "training masks hold only 0 and 255 (2 files) and there are 3 classes: 255 is the ignore index, so "
        "class 1, class 2 would get no pixels; pass --mask-values to give the value of each class (value k read "
        "as class k), or --ignore-index to choose another")


def test_a_class_no_mask_holds_is_listed(tmp_path):
    _write(tmp_path, "train", _objects(4, value=1), classes=("background", "cat", "dog"))
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal() is None
    assert scan.warnings() == ["1 of the 3 classes has no pixel in the training masks: 'dog' (2)"]


def test_a_class_no_mask_holds_while_the_ignore_index_is_there_is_refused(tmp_path):
    masks = _objects(4, value=1)
    for mask in masks:
        mask[-2:] = 255  # 2 of 16 rows: 12.5% of the pixels
    _write(tmp_path, "train", masks, classes=("background", "cat", "dog"))
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal() == (
        "no training mask holds 'dog' (2) of the 3 classes, while 12% of their pixels hold 255, the ignore index: "
        "if 255 is a class, give the value of each class with --mask-values (value k read as class k), or choose "
        "another --ignore-index; if not, pass --mask-values 0,1,2 to train as now")
    confirmed = open_source(str(tmp_path), "train", "mask", mask_values=[0, 1, 2])
    assert scan_masks(confirmed).refusal() is None
    for (x, y), (x_now, y_now) in zip(_targets(confirmed), _targets(open_source(str(tmp_path), "train", "mask"))):
        assert torch.equal(x, x_now) and torch.equal(y, y_now)  # "as now" is what it says


def test_an_ignore_index_that_would_dominate_is_refused(tmp_path):
    """Read as a class, 255 would hold 75% of the labelled pixels: the masks are 0/1/255 with 255 the
    object, or sparse labels; the line offers both readings."""
    masks = [np.full((SIZE, SIZE), 255) for _ in range(3)]
    for mask in masks:
        mask[:2], mask[2:4] = 0, 1  # 2 rows each of 0 and 1, 12 rows of 255
    _write(tmp_path, "train", masks, "P")
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal() == (
        "255, the ignore index, covers 75% of the training masks' pixels, more than all 2 classes together: if it "
        "is a class, give the value of each class with --mask-values (value k read as class k), or choose another "
        "--ignore-index; if the masks label only part of each image, pass --mask-values 0,1 to train as now")
    assert scan_masks(open_source(str(tmp_path), "train", "mask", mask_values=[0, 1])).refusal() is None


def test_values_past_the_classes_are_one_count_not_a_warning_each(tmp_path, caplog):
    masks = _objects(10, value=1)
    for i, mask in enumerate(masks[:7]):
        mask[0, 0] = 3 + i  # 3 to 9: not a class of 3
    _write(tmp_path, "train", masks, "I;16", classes=("background", "cat", "dog"))
    (tmp_path / "train" / "masks" / "9.png").write_text("not a png")
    source = open_source(str(tmp_path), "train", "mask")
    scan = scan_masks(source)
    root = tmp_path / "train" / "masks"
    assert scan.refusal() is None
    assert scan.warnings() == [
        "1 of the 3 classes has no pixel in the training masks: 'dog' (2)",
        f"8 of the 10 training masks will be skipped: 7 hold values that are neither a class (0-2) nor the ignore "
        f"index 255 (3 to 9), 1 is unreadable; e.g. {root / '0.png'} has value 3, not a class (0-2) nor the ignore "
        f"index 255; {root / '1.png'} has value 4, not a class (0-2) nor the ignore index 255; {root / '2.png'} has "
        f"value 5, not a class (0-2) nor the ignore index 255"]
    assert scan.usable == 2 and len(scan.skipped_paths) == 8
    mark_reported(scan.skipped_paths)  # the line above said it: training lists them without a warning each
    with caplog.at_level(logging.WARNING):
        samples = [build_dataset(source, SegmentationTransform(SIZE, [0.5] * 3, [0.25] * 3))[i] for i in range(10)]
    assert sorted(s.path for s in samples if isinstance(s, Skipped)) == sorted(scan.skipped_paths)
    assert not [r for r in caplog.records if "skipping" in r.getMessage()]


def test_a_split_without_a_usable_mask_is_refused(tmp_path):
    masks = _objects(4, value=1)
    for mask in masks:
        mask[0, :3] = 7
    _write(tmp_path, "train", masks, classes=("background", "cat", "dog"))
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert scan.refusal().startswith(
        "none of the 4 training masks can be read as classes: 4 hold values that are neither a class (0-2) nor "
        "the ignore index 255 (7); e.g. ")
    assert scan.warnings() == []


def test_an_all_background_validation_split_is_reported_as_empty_classes(tmp_path):
    _write(tmp_path, "train", _objects(4, value=1))
    _write(tmp_path, "val", [np.zeros((SIZE, SIZE))] * 3)
    assert scan_masks(open_source(str(tmp_path), "train", "mask")).warnings() == []
    val = open_source(str(tmp_path), "val", "mask")
    scan = scan_masks(val)
    line = "1 of the 2 classes has no pixel in the validation masks: 'object' (1)"
    assert scan.refusal() is None and scan.warnings() == [line]
    # at an evaluation: the ground truth counted from the batches gives the same line
    truth = torch.stack([y for _, y in _targets(val)])
    pixels = torch.bincount(truth.flatten(), minlength=2)
    assert pixels.tolist() == [3 * SIZE * SIZE, 0]
    assert empty_classes_warning(pixels.numpy(), val.classes, "validation") == line
    assert empty_classes_warning(np.ones(2), val.classes, "validation") is None


def test_empty_classes_name_the_first_few():
    names = [f"c{i}" for i in range(10)]
    assert empty_classes_warning([5, 0, 0, 0, 0, 0, 0, 0, 3, 0], names, "training") == (
        "8 of the 10 classes have no pixel in the training masks: 'c1' (1), 'c2' (2), 'c3' (3), 'c4' (4), 'c5' (5) "
        "and 3 more")
    assert empty_classes_warning([0, 1], None, "validation") == (
        "1 of the 2 classes has no pixel in the validation masks: class 0")


def test_the_mapping_is_recorded_and_read_back_identically(tmp_path):
    masks = _objects(4)
    masks[0][0, :4] = 7  # a value the mapping leaves out: ignored
    _write(tmp_path, "train", masks, "P")
    _write(tmp_path, "val", _objects(3, seed=1), "P")
    for split in ("train", "val"):
        source = open_source(str(tmp_path), split, "mask", mask_values=BINARY_MASK_VALUES)
        record = json.loads(json.dumps({"mask_values": source.mask_values}))
        assert record == {"mask_values": [0, 255]} and all(type(v) is int for v in source.mask_values)
        again = open_source(str(tmp_path), split, "mask", mask_values=record["mask_values"])
        for (x, y), (x2, y2) in zip(_targets(source), _targets(again), strict=True):
            assert torch.equal(x, x2) and torch.equal(y, y2)
            assert set(y.unique().tolist()) <= {0, 1, 255}
    train = open_source(str(tmp_path), "train", "mask", mask_values=BINARY_MASK_VALUES)
    assert _targets(train)[0][1][0, :4].tolist() == [255] * 4


def test_the_value_counts_are_bounded(tmp_path, monkeypatch):
    monkeypatch.setattr(mask_scan, "MAX_SCANNED_VALUES", 4)
    mask = np.arange(SIZE * SIZE).reshape(SIZE, SIZE) % 10  # values 0-9, ten classes
    _write(tmp_path, "train", [mask, mask], "I;16", classes=[f"c{i}" for i in range(10)])
    scan = scan_masks(open_source(str(tmp_path), "train", "mask"))
    assert sorted(scan.value_pixels) == [0, 1, 2, 3] and scan.value_files == {0: 2, 1: 2, 2: 2, 3: 2}
    assert sum(scan.value_pixels.values()) + scan.other_pixels == 2 * SIZE * SIZE
    assert scan.class_pixels.tolist() == np.bincount(np.tile(mask.ravel(), 2)).tolist()
    assert scan.refusal() is None and scan.warnings() == []

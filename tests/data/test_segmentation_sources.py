"""The segmentation folder reader: pairing by stem, every mask mode, and every bad input's one-line message
(issue 24: hostile folders, classes files and masks)."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitmae.data import DataError, Skipped, UnreadableImage, build_dataset, open_source
from vitmae.data.loader import JointTransform
from vitmae.data.segmentation import (BINARY_MASK_VALUES, SegmentationFolderSource, map_mask_values,
                                     reduce_zero_label)


class Identity(JointTransform):
    def __call__(self, image, target, generator):
        return np.asarray(image), target


def _pair(root, stem, mask, split="train", size=None, mode=None):
    mask = np.asarray(mask, dtype=np.uint8)
    h, w = size or mask.shape
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / split / "images" / f"{stem}.jpg")
    img = Image.fromarray(mask)
    if mode == "P":
        img = img.convert("P")
        img.putpalette([(i * 37) % 256 for i in range(768)])
    elif mode:
        img = img.convert(mode)
    img.save(root / split / "masks" / f"{stem}.png")


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    good = np.array([[0, 1, 2, 255]] * 3)
    _pair(tmp_path, "a", good)
    _pair(tmp_path, "b", good, mode="P")  # a palette PNG: its indices, not its colours
    _pair(tmp_path, "c", good, mode="RGB")
    _pair(tmp_path, "d", good, size=(4, 4))
    _pair(tmp_path, "e", [[0, 3, 1, 1]])
    return tmp_path


def test_good_pairs_read_as_indices(folder):
    source = SegmentationFolderSource(folder, "train")
    assert source.classes == ["background", "cat", "dog"] and source.num_classes == 3 and len(source) == 5
    for i in (0, 1):
        image, mask = source[i]
        assert image.size == (4, 3) and mask.tolist() == [[0, 1, 2, 255]] * 3


def test_bad_pairs_are_skipped_with_their_reason(folder):
    dataset = build_dataset(SegmentationFolderSource(folder, "train"), Identity())
    reasons = {s.path.rsplit("/", 1)[1]: s.reason for s in (dataset[i] for i in range(5)) if isinstance(s, Skipped)}
    assert sorted(reasons) == ["c.jpg", "d.jpg", "e.jpg"]
    assert "is a RGB image: masks must be index PNGs" in reasons["c.jpg"]
    assert "is 4x3, the image 4x4" in reasons["d.jpg"]
    assert "has value 3, not a class (0-2) nor the ignore index 255" in reasons["e.jpg"]
    assert all("\n" not in r for r in reasons.values())


@pytest.mark.parametrize("damage, message", [
    (lambda root: (root / "train" / "masks" / "a.png").unlink(), "1 images in .* have no mask of the same name, e.g. a.jpg"),
    (lambda root: (root / "train" / "images" / "a.jpg").unlink(), "1 masks in .* have no image of the same name, e.g. a.png"),
    (lambda root: (root / "classes.txt").unlink(), "no .*classes.txt .*: write one or give the number of classes"),
    (lambda root: Image.new("RGB", (4, 3)).save(root / "train" / "images" / "a.png"),
     "two files in .* share the name a"),
])
def test_scan_time_errors(folder, damage, message):
    damage(folder)
    with pytest.raises(DataError, match=message):
        SegmentationFolderSource(folder, "train")


def test_missing_split_and_unknown_spec(folder):
    with pytest.raises(DataError, match=r"needs .*val/images/"):
        SegmentationFolderSource(folder, "val")
    with pytest.raises(DataError, match="not 'fashion-scenes' nor an existing folder"):
        open_source(str(folder / "nowhere"), "train", "mask")
    (folder / "classes.txt").unlink()
    assert SegmentationFolderSource(folder, "train", num_classes=3).classes is None


def test_reduce_zero_label_as_mmsegmentation():
    mask = np.array([0, 1, 2, 150, 255])
    assert reduce_zero_label(mask).tolist() == [255, 0, 1, 149, 255]


# -- issue 24: hostile segmentation folders -------------------------------------------------------------

VALUES = np.array([[0, 1, 2, 255]] * 3)


def _mask(root, stem, array, mode=None, ext="png", split="train"):
    """An image (4x3) and its mask file `stem.ext`, written from `array` in the PIL `mode`."""
    (root / split / "images").mkdir(parents=True, exist_ok=True)
    (root / split / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((3, 4, 3), 100, np.uint8)).save(root / split / "images" / f"{stem}.jpg")
    img = Image.fromarray(array)
    img = img.convert(mode) if mode and img.mode != mode else img
    img.save(root / split / "masks" / f"{stem}.{ext}")


# mask file: (array, mode, extension) -> the indices read, or the reason it is skipped
MASK_MODES = {
    "1 (bilevel)": ((VALUES == 1), "1", "png", (VALUES == 1).astype(int).tolist()),
    "I;16 PNG": (VALUES.astype(np.uint16), "I;16", "png", VALUES.tolist()),
    "I TIFF": (VALUES.astype(np.int32), "I", "tif", VALUES.tolist()),
    "F TIFF of whole numbers": (VALUES.astype(np.float32), "F", "tif", VALUES.tolist()),
    "F TIFF of fractions": (VALUES.astype(np.float32) + 0.5, "F", "tif",
                            "the mask is a float image of values that are not whole numbers"),
    "16-bit TIFF with -1": (np.array([[0, 1, -1, 2]] * 3, np.int16), None, "tif",
                            "has value -1, not a class (0-2) nor the ignore index 255"),
    "I;16 past the classes": (np.array([[0, 1, 300, 2]] * 3, np.uint16), "I;16", "png",
                              "has value 300, not a class (0-2) nor the ignore index 255"),
    "RGBA": (np.zeros((3, 4, 4), np.uint8), "RGBA", "png", "the mask is a RGBA image: masks must be index PNGs"),
    "LA": (VALUES.astype(np.uint8), "LA", "png", "the mask is a LA image: masks must be index PNGs"),
}


@pytest.mark.parametrize("case", MASK_MODES)
def test_every_mask_mode_reads_or_is_skipped_in_one_line(tmp_path, case):
    array, mode, ext, expected = MASK_MODES[case]
    (tmp_path / "classes.txt").write_text("background\ncat\ndog\n")
    _mask(tmp_path, "a", array, mode, ext)
    sample = build_dataset(SegmentationFolderSource(tmp_path, "train"), Identity())[0]
    if isinstance(expected, list):
        assert sample[1].tolist() == expected
    else:
        assert isinstance(sample, Skipped) and expected in sample.reason and "\n" not in sample.reason


def test_negative_values_are_never_fed_to_the_loss_even_after_reduce_zero(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\n")
    _mask(tmp_path, "a", np.array([[0, 1, -1, 2]] * 3, np.int32), "I", "tif")
    source = SegmentationFolderSource(tmp_path, "train", reduce_zero=True)
    sample = build_dataset(source, Identity())[0]
    assert isinstance(sample, Skipped) and "has value -2, not a class (0-1)" in sample.reason


def test_a_mask_over_the_pixel_limit_is_refused_before_decoding(tmp_path, monkeypatch):
    from vitmae.data import decode
    from vitmae.data.segmentation import read_index_mask

    _mask(tmp_path, "a", VALUES.astype(np.uint8))
    monkeypatch.setattr(decode, "MAX_PIXELS", 11)
    with pytest.raises(UnreadableImage, match="the mask is 4x3 = 12 pixels, over the limit of 11 pixels"):
        read_index_mask(str(tmp_path / "train" / "masks" / "a.png"))


@pytest.mark.parametrize("classes, message", [
    ("background\ncaf\xe9\n".encode("latin-1"), r"classes.txt is not UTF-8 text: byte 0xe9 on line 2 \(save it as "
                                                r"UTF-8\)"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", r"classes.txt holds binary data \(a NUL byte on line 3\), not a class "
                                             r"name per line"),
    ("".join(f"class{i}\n" for i in range(1_000_000)).encode(), r"classes.txt is over 1048576 bytes: not a list of "
                                                                r"at most 4096 class names"),
    ("".join(f"c{i}\n" for i in range(5000)).encode(), r"classes.txt names 5000 classes, over the limit of 4096"),
    (b"\n  \n", r"classes.txt names no class"),
], ids=["latin-1", "a PNG", "a million lines", "5000 names", "blank lines"])
def test_a_classes_file_that_is_no_list_of_names_is_one_line(folder, classes, message):
    (folder / "classes.txt").write_bytes(classes)
    with pytest.raises(DataError, match=message) as err:
        SegmentationFolderSource(folder, "train")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("num_classes", [2_000_000_000, 4097, 0, -1])
def test_a_number_of_classes_is_bounded(folder, num_classes):
    (folder / "classes.txt").unlink()
    with pytest.raises(DataError, match=f"the number of classes must be 1 to 4096, not {num_classes}"):
        SegmentationFolderSource(folder, "train", num_classes=num_classes)


def test_an_empty_split_is_one_line_naming_the_folder(folder):
    for path in (folder / "train" / "images").iterdir():
        path.unlink()
    for path in (folder / "train" / "masks").iterdir():
        path.unlink()
    with pytest.raises(DataError, match=rf"^no image and mask pairs in {folder / 'train'} \(its images/ and masks/ "
                                        r"are empty\)$"):
        SegmentationFolderSource(folder, "train")


# -- issue 25: mask values read as class ids -------------------------------------------------------------

def test_mask_values_map_any_integers_to_class_ids():
    mask = np.array([[0, 255, 7, -1], [2**31 - 1, 255, 0, 128]], np.int64)
    assert map_mask_values(mask, [255, 0, 2**31 - 1]).tolist() == [[1, 0, 255, 255], [2, 0, 1, 255]]
    assert map_mask_values(mask, BINARY_MASK_VALUES, ignore_index=9).tolist() == [[0, 1, 9, 9], [9, 1, 0, 9]]


def test_mask_values_come_first_then_reduce_zero(tmp_path):
    (tmp_path / "classes.txt").write_text("cat\ndog\nbird\n")
    _mask(tmp_path, "a", np.array([[0, 10, 20, 30]] * 2 + [[5, 255, 30, 10]], np.uint8))
    source = SegmentationFolderSource(tmp_path, "train", reduce_zero=True, mask_values=[0, 10, 20, 30])
    assert source.num_classes == 3 and source.mask_values == [0, 10, 20, 30]
    assert source[0][1].tolist() == [[255, 0, 1, 2]] * 2 + [[255, 255, 2, 0]]


def test_mask_values_give_the_number_of_classes_without_a_classes_file(tmp_path):
    _mask(tmp_path, "a", np.array([[0, 255, 0, 255]] * 3, np.uint8))
    source = open_source(str(tmp_path), "train", "mask", mask_values=(0, 255))
    assert source.classes is None and source.num_classes == 2 and source[0][1].tolist() == [[0, 1, 0, 1]] * 3


@pytest.mark.parametrize("values, options, message", [
    ([], {}, r"mask values must be 1 to 4096 distinct whole numbers 0 to 2147483647 \(value k read as class k\), "
             r"not none$"),
    ([0, 255, 0], {}, r"\(value k read as class k\), not 0, 255, 0$"),
    ([-1, 255], {}, r"not -1, 255$"),
    ([True, 1], {}, r"not True, 1$"),
    ([0, 2**31], {}, r"not 0, 2147483648$"),
    (["0", "255"], {}, r"not '0', '255'$"),
    (list(range(4097)), {}, r"not 0, 1, 2, 3, 4, 5, 6, 7, \.\.\. \(4089 more\)$"),
    ([255], {"reduce_zero": True}, r"mask values must be 2 to 4097 distinct whole numbers 0 to 2147483647 "
                                   r"\(value k read as class k, then reduce-zero\), not 255$"),
    ([0, 255], {"classes": "a\nb\nc\n"}, r"^the mask values 0, 255 give 2 classes, but .*classes.txt names 3: list "
                                         r"a value per class$"),
    ([0, 1, 255], {"num_classes": 2}, r"^the mask values 0, 1, 255 give 3 classes, but the number of classes is "
                                      r"2: list a value per class$"),
    ([0, 1, 255], {"classes": "a\nb\nc\n", "reduce_zero": True},
     r"^the mask values 0, 1, 255 give 2 classes after reduce-zero, but .*classes.txt names 3"),
])
def test_bad_mask_values_are_one_line(tmp_path, values, options, message):
    options = dict(options)
    if "classes" in options:
        (tmp_path / "classes.txt").write_text(options.pop("classes"))
    _mask(tmp_path, "a", VALUES.astype(np.uint8))
    with pytest.raises(DataError, match=message):
        open_source(str(tmp_path), "train", "mask", mask_values=values, **options)


def test_mask_values_are_refused_where_there_are_no_masks_to_read():
    with pytest.raises(DataError, match="^mask values read a segmentation folder's masks; fashion-scenes has none"):
        open_source("fashion-scenes", "train", "mask", mask_values=BINARY_MASK_VALUES)

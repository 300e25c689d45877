"""The segmentation folder reader: pairing by stem, palette masks, and every bad input's one-line message."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vitmae.data import DataError, Skipped, build_dataset, open_source
from vitmae.data.loader import JointTransform
from vitmae.data.segmentation import SegmentationFolderSource, reduce_zero_label


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

"""fashion-scenes: deterministic, labels consistent with the pixels, splits from disjoint item sets."""
from __future__ import annotations

import numpy as np
import pytest

from vitmae.data.scenes import INK, SCENE_CLASSES, FashionScenesSource


@pytest.fixture(scope="module")
def train_scenes():
    return FashionScenesSource("train", num=12, size=48, seed=3, target="scene")


def test_a_scene_is_a_pure_function_of_seed_split_and_index(train_scenes):
    again = FashionScenesSource("train", num=12, size=48, seed=3, target="scene")
    for i in (0, 7):
        (a, ta), (b, tb) = train_scenes[i], again[i]
        assert np.array_equal(np.asarray(a), np.asarray(b)) and np.array_equal(ta.mask, tb.mask)
    other_seed = FashionScenesSource("train", num=12, size=48, seed=4)[0]
    val = FashionScenesSource("val", num=12, size=48, seed=3)[0]
    first = np.asarray(train_scenes[0][0])
    assert not np.array_equal(first, np.asarray(other_seed[0])) and not np.array_equal(first, np.asarray(val[0]))


def test_labels_match_the_items_ink_and_the_instances(train_scenes):
    for i in range(len(train_scenes)):
        image, target = train_scenes[i]
        pixels = np.asarray(image)
        assert image.size == (48, 48) and target.mask.shape == (48, 48)
        assert set(np.unique(target.mask)) <= set(range(len(SCENE_CLASSES)))
        labeled = target.mask > 0
        assert (pixels[labeled] >= INK).all()  # a labeled pixel is an item's ink
        assert len(target.labels) == len(target.boxes) == len(target.masks) >= 1
        union = np.zeros_like(labeled)
        for box, label, visible in zip(target.boxes, target.labels, target.masks):
            assert visible.any() and not (union & visible).any()  # visible parts do not overlap
            union |= visible
            assert (target.mask[visible] == label).all()
            rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
            assert box.tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        assert np.array_equal(union, labeled)


def test_backgrounds_are_textured_and_low_contrast(train_scenes):
    for i in range(4):
        image, target = train_scenes[i]
        background = np.asarray(image)[target.mask == 0].astype(float)
        assert background.std() > 1 and background.mean() < 100


def test_mask_target_and_channels():
    image, mask = FashionScenesSource("val", num=2, size=32, in_chans=3)[1]
    assert image.mode == "RGB" and mask.dtype == np.uint8 and mask.shape == (32, 32)
    with pytest.raises(IndexError):
        FashionScenesSource("val", num=2, size=32)[2]

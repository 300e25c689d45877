"""The joint segmentation transform keeps image and mask aligned. (Sliding windows:
tests/families/dense/segment/test_inference.py.)"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from vitmae.data import Skipped
from vitmae.data.segmentation import SegmentationTransform, collate_masks


def test_a_mask_derived_from_the_image_stays_consistent():
    rng = np.random.default_rng(0)
    pixels = (rng.integers(0, 4, (40, 56)) * 80).astype(np.uint8)  # four flat levels, blocky
    pixels = np.kron(pixels[::8, ::8], np.ones((8, 8), np.uint8))
    mask = pixels // 80  # the mask is a function of the image
    transform = SegmentationTransform(crop=32, mean=(0.0,), std=(1.0,), ignore_index=255)
    for seed in range(12):
        generator = torch.Generator().manual_seed(seed)
        x, y = transform(Image.fromarray(pixels), mask, generator)
        assert x.shape == (1, 32, 32) and y.shape == (32, 32) and y.dtype == torch.long
        valid = y != 255
        # away from the resampled edges between levels, the image still says which class a pixel is
        level = torch.round(x[0] * 255 / 80)
        agree = (level[valid] == y[valid]).float().mean()
        assert agree > 0.8
        # the control: a flip of one and not the other breaks the agreement
        assert (level.flip(-1)[valid] == y[valid]).float().mean() < agree - 0.2
        assert (x[0][~valid] == 0).all()  # padding: 0 in the image where the mask is ignored
    again = transform(Image.fromarray(pixels), mask, torch.Generator().manual_seed(3))
    first = transform(Image.fromarray(pixels), mask, torch.Generator().manual_seed(3))
    assert torch.equal(again[0], first[0]) and torch.equal(again[1], first[1])


def test_rgb_jitter_leaves_the_mask_and_eval_only_normalises():
    image = Image.fromarray(np.full((8, 8, 3), 128, np.uint8))
    mask = np.arange(64).reshape(8, 8) % 3
    x, y = SegmentationTransform(8, (0.5,) * 3, (0.5,) * 3, train=False)(image, mask, torch.Generator())
    assert torch.allclose(x, torch.full((3, 8, 8), (128 / 255 - 0.5) / 0.5), atol=1e-6) and y.tolist() == mask.tolist()


def test_collate_lists_skipped_samples():
    sample = (torch.zeros(1, 4, 4), torch.ones(4, 4, dtype=torch.long), 7)
    batch = collate_masks([sample, Skipped("a.png", "bad mask")])
    assert batch.images.shape == (1, 1, 4, 4) and batch.targets.shape == (1, 4, 4)
    assert batch.indices.tolist() == [7] and batch.skipped == [("a.png", "bad mask")]

"""`fashion-scenes`: dense-prediction data made from real Fashion-MNIST items, with nothing to download.

A scene is a square grayscale canvas: a low-contrast texture cut from one of scikit-image's bundled
photos, and a few Fashion-MNIST items pasted at random scales and positions, later ones occluding
earlier ones. Train scenes take their items from Fashion-MNIST's train split, validation scenes from its
test split, so no item is seen in both. Labels per pixel: 0 background, 1-10 the class of the item whose
ink covers it (an item's dark surround is transparent). Each scene is a pure function of (seed, split,
index), so a dataset is reproducible without being stored; `vitmae make-dataset fashion-scenes` writes it
in the standard layouts (index-mask PNGs, COCO JSON).

A sample is `(image, target)` with `target = SceneTarget(mask, boxes, labels, masks)`: the index mask
(H, W) uint8, the visible items' boxes (K, 4) as x0, y0, x1, y1 (pixel edges, exclusive end), their
labels (1-10) and their visible instance masks (K, H, W) bool. Items hidden entirely are left out.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np
from PIL import Image

from vitmae.data.decode import ImageLike, convert_image
from vitmae.data.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNISTSource
from vitmae.data.photos import bundled_photos
from vitmae.data.source import DataError

FASHION_SCENES = "fashion-scenes"  # the name that selects them wherever data is named
SCENE_CLASSES = ["background", *FASHION_MNIST_CLASSES]
_SPLITS = {"train": ("train", 0), "val": ("test", 1), "test": ("test", 1)}  # scene split -> (items, key)
INK = 40  # an item's pixel at or above this (of 255) is ink: opaque and labeled


class SceneTarget(NamedTuple):
    mask: np.ndarray  # (H, W) uint8 class index, 0 = background
    boxes: np.ndarray  # (K, 4) float32 x0, y0, x1, y1
    labels: np.ndarray  # (K,) int64, 1-10
    masks: np.ndarray  # (K, H, W) bool, the visible part of each item


@functools.lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, ...]:
    """The bundled photos as grayscale arrays, at least 256 px a side (the texture pool)."""
    photos = []
    for path in bundled_photos():
        with Image.open(path) as img:
            gray = img.convert("L")
        scale = max(1.0, 256 / min(gray.size))
        gray = gray.resize((round(gray.width * scale), round(gray.height * scale)), Image.BILINEAR)
        photos.append(np.asarray(gray, dtype=np.float32))
    return tuple(photos)


def render_scene(items: FashionMNISTSource, seed: int, split_key: int, index: int, size: int,
                 max_items: int = 4) -> tuple[np.ndarray, SceneTarget]:
    """One scene, (image (size, size) uint8, target): a pure function of its arguments."""
    rng = np.random.default_rng([seed, split_key, index])
    textures = _textures()
    photo = textures[rng.integers(len(textures))]
    # a texture tile bigger than the canvas, shrunk to it: finer grain than a raw crop of a large photo
    tile = min(photo.shape[0], photo.shape[1], 2 * size)
    y, x = rng.integers(photo.shape[0] - tile + 1), rng.integers(photo.shape[1] - tile + 1)
    crop = Image.fromarray(photo[y:y + tile, x:x + tile]).resize((size, size), Image.BILINEAR)
    crop = np.asarray(crop, dtype=np.float32)
    # low contrast: items stay visible, but the background is not flat (a model must look at shape)
    level, spread = rng.uniform(20, 70), rng.uniform(6, 16)
    canvas = level + spread * (crop - crop.mean()) / (crop.std() + 1e-6)
    instance = np.zeros((size, size), dtype=np.int64)  # 0 = none, k = the k-th pasted item
    labels = []
    for k in range(1, int(rng.integers(1, max_items + 1)) + 1):
        item = int(rng.integers(len(items)))
        side = int(np.clip(round(size * rng.uniform(0.3, 0.7)), 8, size))
        pixels = np.asarray(Image.fromarray(items.images[item]).resize((side, side), Image.BILINEAR))
        y, x = rng.integers(size - side + 1), rng.integers(size - side + 1)
        ink = pixels >= INK
        window = (slice(y, y + side), slice(x, x + side))
        canvas[window][ink] = pixels[ink]
        instance[window][ink] = k
        labels.append(int(items.labels[item]) + 1)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8)
    mask = np.zeros((size, size), dtype=np.uint8)
    boxes, kept, masks = [], [], []
    for k, label in enumerate(labels, start=1):
        visible = instance == k
        if not visible.any():
            continue
        mask[visible] = label
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        boxes.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
        kept.append(label)
        masks.append(visible)
    target = SceneTarget(mask, np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
                         np.asarray(kept, dtype=np.int64), np.asarray(masks, dtype=bool).reshape(-1, size, size))
    return image, target


def scene_count(split: str, scenes: int | None, val_scenes: int | None = None) -> int | None:
    """Scenes of a split when `scenes` are asked for training: validation gets `val_scenes`, or a fifth as
    many, as make-dataset writes them (None: the source's default)."""
    if split != "train" and val_scenes is not None:
        return val_scenes
    if scenes is None:
        return None
    return scenes if split == "train" else max(1, scenes // 5)


class FashionScenesSource:
    """`num` scenes of `size` px for `split` (train, or val / test: the test split's items), made on access.

    `target="mask"` gives the index mask alone (what semantic segmentation needs), `"scene"` the whole
    `SceneTarget`.
    """

    classes = SCENE_CLASSES

    def __init__(self, split: str = "train", num: int | None = None, size: int = 64, seed: int = 0,
                 in_chans: int = 1, target: str = "mask", items: FashionMNISTSource | None = None) -> None:
        if split not in _SPLITS:
            raise DataError(f"unknown split {split!r} for fashion-scenes (train, val or test)")
        if size < 16:
            raise DataError(f"fashion-scenes need at least 16 px a side, not {size}")
        if target not in ("mask", "scene"):
            raise ValueError(f"target must be 'mask' or 'scene', not {target!r}")
        item_split, self.split_key = _SPLITS[split]
        self.items = items or FashionMNISTSource(item_split)
        self.num = num if num is not None else (5000 if split == "train" else 1000)
        self.size, self.seed, self.in_chans, self.target = size, seed, in_chans, target
        self.paths = [f"fashion-scenes/{split}/{i}" for i in range(self.num)]

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, index: int) -> tuple[ImageLike, np.ndarray | SceneTarget]:
        if not 0 <= index < self.num:
            raise IndexError(index)
        image, target = render_scene(self.items, self.seed, self.split_key, index, self.size)
        img = convert_image(Image.fromarray(image), self.in_chans)
        return img, target.mask if self.target == "mask" else target

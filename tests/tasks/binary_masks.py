"""Tiny segmentation folders of real PNGs written by the tests: a bright square on dark noise, its mask
written as hand-made binary masks are (8-bit, 0 the background and 255 the object), classes.txt naming
both classes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 32


def write_binary_masks(root: Path, train: int = 8, val: int = 4, val_objects: bool = True, seed: int = 0) -> Path:
    """ROOT/{train,val}/{images,masks}/NNN.png and ROOT/classes.txt (background, object)."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("val", val)):
        for folder in ("images", "masks"):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            image = (rng.random((SIZE, SIZE, 3)) * 80).astype(np.uint8)
            mask = np.zeros((SIZE, SIZE), np.uint8)
            if split == "train" or val_objects:
                side = int(rng.integers(10, 18))
                y, x = (int(v) for v in rng.integers(0, SIZE - side, 2))
                image[y:y + side, x:x + side] = (230, 220, 60)
                mask[y:y + side, x:x + side] = 255
            Image.fromarray(image).save(root / split / "images" / f"{i:03d}.png")
            Image.fromarray(mask, mode="L").save(root / split / "masks" / f"{i:03d}.png")
    (root / "classes.txt").write_text("background\nobject\n")
    return root

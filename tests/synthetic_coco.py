"""Small synthetic COCO data sets written by the tests: bright rectangles (polygons) and ellipses (RLE) of
distinct colours on noise, with boxes; the layout of COCO 2017 (ROOT/annotations, ROOT/train2017, ...)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

CATEGORIES = [{"id": 3, "name": "red-box"}, {"id": 7, "name": "green-ellipse"}]  # ids need not be 1..K


def _scene(rng: np.random.Generator, size: int, image_id: int, first_ann: int) -> tuple[np.ndarray, list[dict]]:
    from pycocotools import mask as mask_api

    image = (rng.random((size, size, 3)) * 90).astype(np.uint8)
    anns = []
    for k in range(int(rng.integers(1, 3))):
        w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
        x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
        if k % 2 == 0:  # a red rectangle, as a polygon
            image[y:y + h, x:x + w] = (230, 30, 30)
            seg = [[x, y, x + w, y, x + w, y + h, x, y + h]]
            cat = 3
        else:  # a green ellipse, as compressed RLE
            yy, xx = np.mgrid[:size, :size]
            inside = ((xx + 0.5 - x - w / 2) / (w / 2)) ** 2 + ((yy + 0.5 - y - h / 2) / (h / 2)) ** 2 <= 1
            image[inside] = (30, 230, 30)
            rle = mask_api.encode(np.asfortranarray(inside.astype(np.uint8)))
            seg = {"size": rle["size"], "counts": rle["counts"].decode("ascii")}
            cat = 7
        anns.append({"id": first_ann + k, "image_id": image_id, "category_id": cat, "bbox": [x, y, w, h],
                     "area": float(w * h), "iscrowd": 0, "segmentation": seg})
    return image, anns


def write_coco(root: Path, split: str, count: int, size: int = 32, seed: int = 0, negatives: int = 0) -> Path:
    """ROOT/annotations/instances_{split}.json and ROOT/{split}/*.png: `count` scenes, the last
    `negatives` of them without objects. Returns the JSON's path."""
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    (root / split / "scenes").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(count):
        image_id = 100 + i
        pixels, anns = _scene(rng, size, image_id, len(annotations) + 1)
        if i >= count - negatives:
            pixels, anns = (rng.random((size, size, 3)) * 90).astype(np.uint8), []
        name = f"scenes/{i:04d}.png"  # file_name with a sub-folder, as COCO allows
        Image.fromarray(pixels).save(root / split / name)
        images.append({"id": image_id, "file_name": name, "height": size, "width": size})
        annotations.extend(anns)
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": CATEGORIES}))
    return path

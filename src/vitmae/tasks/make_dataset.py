"""`vitmae make-dataset fashion-scenes --out DIR`: write the built-in scenes in the standard layouts, so a
user sees the formats their own data should take:

    DIR/classes.txt                      one class name per line, line k = index k (0: background)
    DIR/{train,val}/images/NNNNNN.png    the scenes
    DIR/{train,val}/masks/NNNNNN.png     index masks, matched by file stem (palette PNGs, as VOC ships them:
                                         the pixel values are the class indices, the palette only shows them)
    DIR/annotations/instances_{train,val}.json   COCO detection: bbox [x, y, w, h], uncompressed RLE
                                         segmentation of the visible part, area, iscrowd 0

Everything is written into a sibling folder first and renamed to DIR at the end, so an interrupted run
leaves no half dataset, and an existing non-empty DIR is refused rather than mixed into.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.coco import SCENE_CATEGORIES, scene_annotations
from ..data.scenes import SCENE_CLASSES, FashionScenesSource
from ..data.segmentation import write_index_mask
from ..errors import ConfigError
from ..options import Options, opt
from ..train import write_json
from .options import Task

__all__ = ["MakeDatasetOptions", "make_dataset"]


@dataclass
class MakeDatasetOptions(Options):
    """`vitmae make-dataset`: write a built-in dense-prediction dataset to a folder."""

    name: str = opt(None, "the dataset to write", choices=("fashion-scenes",), positional=True)
    out: str = opt(None, "the folder to create (refused if it exists and is not empty)", required=True)
    num: int = opt(1000, "training scenes", min=1)
    num_val: int | None = opt(None, "validation scenes (default: a fifth of --num, at least one)", min=1)
    size: int = opt(64, "side of the square scenes, in pixels", min=16)
    seed: int = opt(0, "the scenes are a pure function of (seed, split, index)", min=0)


def _write_split(root: Path, split: str, source: FashionScenesSource) -> dict[str, Any]:
    images, masks = root / split / "images", root / split / "masks"
    images.mkdir(parents=True)
    masks.mkdir(parents=True)
    coco_images, annotations = [], []
    for index in range(len(source)):
        image, target = source[index]
        stem = f"{index:06d}"
        image.save(images / f"{stem}.png")
        write_index_mask(target.mask, masks / f"{stem}.png")
        coco_images.append({"id": index + 1, "file_name": f"{split}/images/{stem}.png",
                            "width": source.size, "height": source.size})
        annotations += scene_annotations(target, index + 1, len(annotations) + 1)
    write_json(root / "annotations" / f"instances_{split}.json",
               {"images": coco_images, "annotations": annotations, "categories": SCENE_CATEGORIES})
    return {"images": len(coco_images), "instances": len(annotations)}


def make_dataset(cfg: MakeDatasetOptions) -> dict[str, Any]:
    out = Path(cfg.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out} exists and is not an empty folder: choose a new one (nothing is overwritten)")
    out.parent.mkdir(parents=True, exist_ok=True)
    num_val = cfg.num_val or max(1, cfg.num // 5)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        (work / "annotations").mkdir()
        (work / "classes.txt").write_text("\n".join(SCENE_CLASSES) + "\n")
        splits = {split: _write_split(work, split, FashionScenesSource(split, num, cfg.size, cfg.seed,
                                                                         target="scene"))
                  for split, num in (("train", cfg.num), ("val", num_val))}
        os.replace(work, out)  # an empty `out` is replaced as a whole
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return {"name": cfg.name, "out": str(out), "size": cfg.size, "seed": cfg.seed, "classes": len(SCENE_CLASSES),
            "splits": splits}


def report(s: dict[str, Any], cfg: MakeDatasetOptions) -> list[str]:
    counts = ", ".join(f"{split} {n['images']} images ({n['instances']} instances)" for split, n in s["splits"].items())
    return [f"wrote {s['name']} to {s['out']}: {counts}; {s['classes']} classes in classes.txt, "
            "COCO JSON in annotations/"]


TASK = Task("make-dataset", "write a built-in dataset (fashion-scenes) in the standard folder layouts",
            MakeDatasetOptions, make_dataset, report, config_file=False)

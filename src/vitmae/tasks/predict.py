"""`vitmae predict --checkpoint RUN IMAGE... --out DIR`: a segmentation or detection run's predictions on
images. The run says which: its record (segmenter.json or detector.json) and its checkpoint give the
model, the input normalisation, the classes, the crop and the stride; nothing is guessed.

A `vitmae segment` run, per image (images larger than the run's crop by sliding windows, its crop and
stride, with averaged logits):

    OUT/masks/NAME.png       the predicted class indices (the model's, 0 to classes - 1) as a palette PNG:
                             the values are the indices, the palette (make-dataset's) only shows them
    OUT/overlays/NAME.png    the image under the semi-transparent coloured mask, and a legend of the
                             classes present, by the run's class names

A `vitmae detect` run:

    OUT/images/NAME.png      boxes, labels, scores (and masks) of the detections scoring at least
                             --score-threshold (torchvision's drawing utilities)
    OUT/detections.json      every detection in the COCO results format: image ids of the COCO JSON
                             given, else 1, 2, ... in the order of the images

Both: OUT/predictions.json, what was written for each image, and the images that could not be read
(skipped and listed, not fatal). NAME is the image's file name without its extension (numbered where two
share one).
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data import build_dataset, build_loader
from ..data.coco import CocoSource, DetectionTransform
from ..data.segmentation import write_index_mask
from ..data.sources import ImageFilesSource, require_readable
from ..data.transforms import NormalizeTransform
from ..errors import ConfigError
from ..options import opt
from ..train import write_json
from ..train.checkpoint import write_text_atomic
from ..train.config import RuntimeOptions
from ..viz.dense import SCORE_THRESHOLD, draw_detections, segment_image
from ..train.run_dir import WHICH, run_checkpoint
from ..train.runtime import Runtime
from .common import RUN_RECORDS, DenseRun, detection_loader, load_dense_run, run_detector
from .options import Task

__all__ = ["PredictConfig", "predict"]


@dataclass
class PredictConfig(RuntimeOptions):
    """`vitmae predict`: a segmentation or detection run's predictions on images."""

    images: list[str] = opt([], "image files or folders (every image under them); for a detection run also one "
                            "COCO JSON, whose images are read with their ids", positional=True, metavar="IMAGE")
    checkpoint: str | None = opt(None, "a `vitmae segment` or `vitmae detect` run directory, or one of its "
                                 "checkpoints", required=True)
    which: str = opt("best", "of a run directory: best (the best validation mIoU of a segmentation run; a "
                     "detection run keeps its last) | last", choices=WHICH)
    out: str = opt("runs/predict", "directory of the masks and overlays, or the drawn images and detections.json")
    image_root: str | None = opt(None, "folder of a COCO JSON's images (default: the JSON's folder)")
    score_threshold: float = opt(SCORE_THRESHOLD, "draw the detections scoring at least this (detections.json keeps "
                                 "all)", min=0, max=1)
    batch_size: int = opt(8, "detection: images per forward pass", min=1)


def output_names(paths: list[str]) -> list[str]:
    """A file name per image: its own stem, numbered where two images share one."""
    stems = [Path(p).stem for p in paths]
    shared, seen = Counter(stems), Counter()
    names = []
    for stem in stems:
        seen[stem] += 1
        names.append(f"{stem}-{seen[stem]}" if shared[stem] > 1 else stem)
    return names


def predict_masks(run: DenseRun, cfg: PredictConfig, runtime: Runtime, out: Path) -> dict[str, Any]:
    """The index-mask and overlay PNGs of every readable image."""
    if any(name.endswith(".json") for name in cfg.images):
        raise ConfigError("a COCO JSON lists detection images: give a segmentation run image files or folders")
    info, model, config, names = run.info, run.model.to(runtime.device), run.model.config, run.class_names
    source = ImageFilesSource(cfg.images, config.in_chans)
    # one image per batch: the images differ in size
    loader = build_loader(build_dataset(source, NormalizeTransform(config.mean, config.std)), 1, None,
                          cfg.num_workers, drop_last=False, persistent_workers=False)
    files = output_names(source.paths)
    images, skipped = [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            segmented = segment_image(model, batch.images[0].to(runtime.device), names, info["crop_size"],
                                      info["stride"])
        index = int(batch.indices[0])
        mask_file, overlay_file = (out / kind / f"{files[index]}.png" for kind in ("masks", "overlays"))
        for folder in (mask_file.parent, overlay_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        write_index_mask(segmented.mask, mask_file)
        segmented.overlay.save(overlay_file)
        images.append({"image": source.paths[index], "mask": str(mask_file), "overlay": str(overlay_file),
                       "classes": segmented.shares})
    require_readable(len(images), "the images given", (reason for _, reason in skipped))
    return {"images": images, "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


class NumberedImages:
    """Image files as detection samples without objects: image id i + 1 for the i-th file."""

    def __init__(self, files: ImageFilesSource):
        self.files, self.paths = files, files.paths
        self.images = [{"id": i + 1} for i in range(len(files))]

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        return self.files[index][0], {"image_id": index + 1}


def predict_detections(run: DenseRun, cfg: PredictConfig, runtime: Runtime, out: Path) -> dict[str, Any]:
    """The drawn images and the COCO results of every readable image."""
    info, in_chans = run.info, run.model.config.in_chans
    coco_files = [name for name in cfg.images if name.endswith(".json")]
    if coco_files and len(cfg.images) > 1:
        raise ConfigError("give a COCO JSON alone (its images carry its ids), or image files and folders")
    source = (CocoSource(coco_files[0], cfg.image_root or Path(coco_files[0]).parent, in_chans) if coco_files
              else NumberedImages(ImageFilesSource(cfg.images, in_chans)))
    results, image_ids, skipped = run_detector(run.model, detection_loader(source, cfg.batch_size, cfg.num_workers),
                                               runtime, info["category_ids"])
    require_readable(len(image_ids), "the images given", (reason for _, reason in skipped))
    by_image = defaultdict(list)
    for result in results:
        by_image[result["image_id"]].append(result)
    index_of = {image["id"]: i for i, image in enumerate(source.images)}
    files = output_names(source.paths)
    (out / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for image_id in image_ids:
        index = index_of[image_id]
        pixels = DetectionTransform()(source[index][0], {}, torch.Generator())[0]  # read again, to draw on
        drawn = draw_detections(pixels, by_image[image_id], run.category_names, cfg.score_threshold)
        picture = out / "images" / f"{files[index]}.png"
        drawn.picture.save(picture)
        images.append({"image": source.paths[index], "image_id": image_id, "picture": str(picture),
                       "detections": len(by_image[image_id]), "drawn": len(drawn.shown)})
    write_text_atomic(out / "detections.json", json.dumps(results) + "\n")
    return {"images": images, "detections": len(results), "drawn": sum(i["drawn"] for i in images),
            "detections_json": str(out / "detections.json"), "classes": info["classes"],
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped]}


def predict(cfg: PredictConfig) -> dict[str, Any]:
    """Predict as `cfg` says; returns the summary also written to OUT/predictions.json."""
    if not cfg.images:
        raise ConfigError("give the images to predict: files or folders (a detection run: or a COCO JSON)")
    if not Path(cfg.checkpoint).exists():
        raise ConfigError(f"--checkpoint {cfg.checkpoint}: no such run directory or checkpoint")
    run = load_dense_run(run_checkpoint(cfg.checkpoint, cfg.which))
    if run is None:
        raise ConfigError(f"{cfg.checkpoint} is not a `vitmae segment` or `vitmae detect` run (it has no "
                          f"{' or '.join(RUN_RECORDS.values())}): predict takes the runs of those two")
    out = Path(cfg.out)
    kind = predict_masks if run.kind == "segment" else predict_detections
    summary = {"run": run.kind, "checkpoint": cfg.checkpoint, "checkpoint_used": str(run.checkpoint),
               **kind(run, cfg, Runtime(cfg.device, cfg.precision), out)}
    write_json(out / "predictions.json", summary)
    return summary


def report(s: dict[str, Any], cfg: PredictConfig) -> list[str]:
    out, skipped = Path(cfg.out), len(s["skipped_files"])
    unread = f"; {skipped} unreadable images skipped (listed in {out / 'predictions.json'})" if skipped else ""
    if s["run"] == "segment":
        return [f"masks and overlays of {len(s['images'])} images in {out / 'masks'} and {out / 'overlays'}{unread}"]
    return [f"{s['detections']} detections on {len(s['images'])} images ({s['drawn']} drawn, score >= "
            f"{cfg.score_threshold}); COCO results in {s['detections_json']}, pictures in {out / 'images'}{unread}"]


TASK = Task("predict", "a segmentation run's masks and overlays, or a detection run's drawn detections and COCO "
            "results, on images", PredictConfig, predict, report, config_file=False)

"""`vitmae predict --checkpoint RUN IMAGE... --out DIR`: a segmentation or detection run's predictions on
images. The run says which: its record (segmenter.json or detector.json) names its family, and its family
predicts from the record and the checkpoint (the model, the input normalisation, the classes, the crop and
the stride); nothing is guessed.

A `vitmae segment` run, per image (images larger than the run's crop by sliding windows, its crop and
stride, with averaged logits; `--tta`: averaged over mmseg's flips and scales 0.5-1.75):

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

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..families import FAMILIES, PredictionRequest, family, run_family
from ..options import opt
from ..train import write_json
from ..train.config import RuntimeOptions
from ..train.run_dir import WHICH, run_checkpoint
from ..train.runtime import Runtime
from ..viz.dense import SCORE_THRESHOLD
from .options import Task

__all__ = ["PredictOptions", "predict"]


@dataclass
class PredictOptions(RuntimeOptions):
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
    tta: bool = opt(False, "a segmentation run: with test-time augmentation (mmseg's left-right flips and scales "
                    "0.5-1.75, averaged probabilities)")


def predict(cfg: PredictOptions) -> dict[str, Any]:
    """Predict as `cfg` says; returns the summary also written to OUT/predictions.json."""
    if not cfg.images:
        raise ConfigError("give the images to predict: files or folders (a detection run: or a COCO JSON)")
    if not Path(cfg.checkpoint).exists():
        raise ConfigError(f"--checkpoint {cfg.checkpoint}: no such run directory or checkpoint")
    checkpoint = run_checkpoint(cfg.checkpoint, cfg.which)
    found = run_family(checkpoint)
    if found is None:
        takers = [spec for spec in FAMILIES.values() if spec.predict is not None]
        count = {1: "one", 2: "two", 3: "three"}.get(len(takers), str(len(takers)))
        raise ConfigError(f"{cfg.checkpoint} is not a {' or '.join(f'`vitmae {spec.name}`' for spec in takers)} run "
                          f"(it has no {' or '.join(spec.record.FILE for spec in takers)}): predict takes the runs "
                          f"of those {count}")
    spec, record = found
    if cfg.tta:
        spec.slot("tta_scales", "--tta")
    run = spec.load_run(checkpoint, record)
    out = Path(cfg.out)
    request = PredictionRequest(cfg.images, out, cfg.image_root, cfg.score_threshold, cfg.batch_size, cfg.num_workers,
                                Runtime(cfg.device, cfg.precision), cfg.tta)
    summary = {"run": spec.name, "checkpoint": cfg.checkpoint, "checkpoint_used": str(run.checkpoint),
               **spec.slot("predict", "predict")(run, request)}
    write_json(out / "predictions.json", summary)
    return summary


def report(s: dict[str, Any], cfg: PredictOptions) -> list[str]:
    out, skipped = Path(cfg.out), len(s["skipped_files"])
    unread = f"; {skipped} unreadable images skipped (listed in {out / 'predictions.json'})" if skipped else ""
    *lines, last = family(s["run"]).slot("prediction_lines", "predict")(s, out)
    return [*lines, last + unread]


TASK = Task("predict", "a segmentation run's masks and overlays, or a detection run's drawn detections and COCO "
            "results, on images", PredictOptions, predict, report, config_file=False)

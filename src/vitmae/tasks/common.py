"""What the segment, detect, evaluate, predict and demo tasks share of dense runs: their records, models and
scores. No task imports another task's module; what two of them need is here."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from ..data import build_dataset, build_loader
from ..data.coco import DetectionTransform, coco_metrics, collate_detection, to_coco_results
from ..data.scenes import FashionScenesSource
from ..data.segmentation import SegmentationTransform, collate_masks
from ..interop.safe_load import CheckpointError
from ..interop.vitmae_format import load_vitmae, resolve_checkpoint
from ..model import ViTEncoder
from ..model.detection import vitdet
from ..model.segmentation import Segmenter, sliding_window_logits
from ..train.checkpoint import write_text_atomic
from ..train.runtime import Runtime
from ..train.segmentation_metrics import SegmentationMetrics


# -- segmentation and detection runs -------------------------------------------------------------------
# What `vitmae segment` and `vitmae detect` write beside their checkpoints: all that rebuilds the model
# exactly (beyond the checkpoint's encoder config and normalisation) and finds the run's data again.
RUN_RECORDS = {"segment": "segmenter.json", "detect": "detector.json"}


def write_run_record(kind: str, output: Path, record: dict[str, Any]) -> None:
    write_text_atomic(output / RUN_RECORDS[kind], json.dumps(record, indent=2) + "\n")


def dense_run_record(checkpoint: str | Path) -> tuple[str, dict[str, Any]] | None:
    """(kind, record) of the segment or detect run that `checkpoint` (the run directory, one of its
    checkpoints or a weights file) belongs to; None for any other checkpoint."""
    path = resolve_checkpoint(checkpoint)
    if not path.exists():  # a hub id, say: no run of ours
        return None
    folder = path if path.is_dir() else path.parent
    for place in (folder, *list(folder.parents)[:2]):  # the checkpoint, RUN/checkpoints, RUN
        for kind, name in RUN_RECORDS.items():
            if (place / name).is_file():
                try:
                    return kind, json.loads((place / name).read_text())
                except ValueError as err:
                    raise CheckpointError(f"{place / name} is not valid JSON: {err}") from None
    return None


class DenseRun(NamedTuple):
    kind: str  # "segment" or "detect"
    model: nn.Module  # in eval mode, on the CPU
    info: dict[str, Any]  # the run's record
    checkpoint: Path  # where the weights came from

    @property
    def class_names(self) -> list[str]:
        """The run's class names; a folder without classes.txt: the class indices."""
        return self.info["classes"] or [str(c) for c in range(self.info["num_classes"])]

    @property
    def category_names(self) -> dict[int, str]:
        """A detection run's category ids, in the order of the model's labels, and their names."""
        return dict(zip(self.info["category_ids"], self.info["classes"]))


def load_dense_run(checkpoint: str | Path) -> DenseRun | None:
    """The trained model of a segment or detect run, rebuilt from its record and the checkpoint's encoder
    config (normalisation included); None for any other checkpoint."""
    found = dense_run_record(checkpoint)
    if found is None:
        return None
    kind, info = found
    weights, config = load_vitmae(checkpoint)
    encoder = ViTEncoder(config)
    if info.get("pos_embed") == "learned":  # interpolated, not recomputed, at other sizes
        encoder.learn_pos_embed()
    if kind == "segment":
        model = Segmenter(encoder, info["num_classes"], info["head"], info["out_indices"])
    else:
        model = vitdet(encoder, len(info["classes"]), info["masks"], tuple(info["img_size"]), info["window_size"],
                       info["global_blocks"], info["pyramid_channels"], info["proposals"],
                       info["detections_per_image"])
    model.load_state_dict(weights)
    return DenseRun(kind, model.eval(), info, resolve_checkpoint(checkpoint))


def segmentation_loader(source, crop: int, mean, std, batch_size: int, num_workers: int):
    """Evaluation batches of a segmentation source at the images' own sizes: fashion-scenes share theirs; a
    folder's differ, so one image per batch."""
    batch_size = batch_size if isinstance(source, FashionScenesSource) else 1
    return build_loader(build_dataset(source, SegmentationTransform(crop, mean, std, train=False)), batch_size,
                        None, num_workers, drop_last=False, persistent_workers=num_workers > 0,
                        collate_fn=collate_masks)


@torch.no_grad()
def segmentation_scores(model: nn.Module, loader, num_classes: int, ignore_index: int, crop: int, stride: int,
                        runtime, class_names: list[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(mIoU, mAcc, aAcc and per-class IoU / Acc of `model` on the batches of `loader`, images larger than
    `crop` predicted by sliding windows; the pairs that could not be read, path: reason). `runtime` has a
    `device` and `autocast()`: a Runtime, or the Trainer."""
    metrics, skipped = SegmentationMetrics(num_classes, ignore_index), {}
    was_training = model.training
    model.eval()
    for batch in loader:
        skipped.update(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            logits = sliding_window_logits(model, batch.images.to(runtime.device), num_classes, crop, stride)
        metrics.update(logits.argmax(1), batch.targets)
    model.train(was_training)
    return metrics.compute(class_names), skipped


def detection_loader(source, batch_size: int, num_workers: int):
    """Evaluation batches of a detection source: the images as they are (the detector resizes them)."""
    return build_loader(build_dataset(source, DetectionTransform(), seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=False, collate_fn=collate_detection)


@torch.no_grad()
def run_detector(model: nn.Module, loader, runtime, category_ids: list[int]) -> tuple[list[dict], list, list]:
    """(COCO results of every readable image, their image ids, (path, reason) of the skipped ones)."""
    was_training = model.training
    model.eval().to(runtime.device)
    results, image_ids, skipped = [], [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            outputs = model([image.to(runtime.device) for image in batch.images])
        for output, target in zip(outputs, batch.targets):
            results.extend(to_coco_results(output, target["image_id"], category_ids))
            image_ids.append(target["image_id"])
    model.train(was_training)
    return results, image_ids, skipped


def coco_scores(model: nn.Module, loader, source, ground_truth, masks: bool, runtime) -> tuple[dict[str, Any], list]:
    """({"box": COCO metrics, "mask": those of the masks (with `masks`)} of `model` on the images of
    `loader`, scored against `ground_truth`; (path, reason) of the images that could not be read)."""
    results, image_ids, skipped = run_detector(model, loader, runtime, source.category_ids)
    scores = {"box": coco_metrics(ground_truth, results, "bbox", image_ids, source.classes)}
    if masks:
        scores["mask"] = coco_metrics(ground_truth, results, "segm", image_ids, source.classes)
    return scores, skipped

"""How a segmentation model is measured, as mmsegmentation measures it (`metrics`): on a run's validation
images during training (mIoU every few epochs, the best weights kept, a picture of the predictions each
time), and by `vitmae evaluate` on a finished run."""
from __future__ import annotations

import logging
from functools import cached_property
from typing import Any

import torch
from PIL.PngImagePlugin import PngInfo
from torch import Tensor, nn

from ....data import Batch, build_dataset, build_loader, open_source, readable
from ....data.labels import Source
from ....data.mask_scan import SPLIT_NAMES, empty_classes_warning
from ....data.scenes import FashionScenesSource
from ....data.segmentation import SegmentationTransform, collate_masks
from ....train import Trainer
from ....train.hooks import PeriodicEvaluation
from ....train.runtime import Runtime, eval_mode
from ....viz.dense import segmentation_grid
from ...encoder import Stats
from ...spec import EvaluationRequest
from .inference import TTA_SCALES, predicted_mask, sliding_window_logits, tta_probabilities
from .metrics import SegmentationMetrics
from .model import load_run

PICTURED = 8  # validation images whose predictions each evaluation draws (RUN/predictions/)
log = logging.getLogger(__name__)

EVAL_BATCH = 256  # images per forward pass of `vitmae evaluate` (fashion-scenes; a folder's: one at a time)


def segmentation_loader(source: Source, crop: int, mean: Stats, std: Stats, batch_size: int, num_workers: int):
    """Evaluation batches of a segmentation source at the images' own sizes: fashion-scenes share theirs; a
    folder's differ, so one image per batch."""
    batch_size = batch_size if isinstance(source, FashionScenesSource) else 1
    return build_loader(build_dataset(source, SegmentationTransform(crop, mean, std, train=False)), batch_size,
                        None, num_workers, drop_last=False, persistent_workers=num_workers > 0,
                        collate_fn=collate_masks)


@torch.no_grad()
def segmentation_scores(model: nn.Module, loader, num_classes: int, ignore_index: int, crop: int, stride: int,
                        runtime: Runtime, class_names: list[str] | None = None, split: str = "val",
                        tta: bool = False) -> tuple[dict[str, Any], dict[str, str]]:
    """(mIoU, mAcc, aAcc and per-class IoU / Acc of `model` on the batches of `loader`, images larger than
    `crop` predicted by sliding windows, and with `tta` the same with test-time augmentation under "tta";
    the pairs that could not be read, path: reason). The classes without ground truth in `split` are
    logged, once."""
    metrics, skipped = SegmentationMetrics(num_classes, ignore_index), []
    augmented = SegmentationMetrics(num_classes, ignore_index)

    def forward(batch: Batch) -> tuple[Tensor, Tensor | None]:
        images = batch.images.to(runtime.device)
        return (sliding_window_logits(model, images, num_classes, crop, stride),
                tta_probabilities(model, images, num_classes, crop, stride) if tta else None)

    for batch, (logits, probabilities) in runtime.forward_each(model, loader, forward, skipped):
        metrics.update(logits.argmax(1), batch.targets)
        if tta:
            augmented.update(probabilities.argmax(1), batch.targets)
    scores = metrics.compute(class_names)
    if line := empty_classes_warning(list(scores["pixels"].values()), class_names, SPLIT_NAMES.get(split, split)):
        log.warning(line)
    if tta:
        scores["tta"] = {**augmented.compute(class_names), "scales": list(TTA_SCALES), "flip": True}
    return scores, dict(skipped)


class SegmentationEvaluator(PeriodicEvaluation):
    """mIoU / mAcc / aAcc on the validation set every `every` epochs and at the end, the best mIoU's
    weights in RUN/checkpoints/best. Each evaluation also draws the first PICTURED validation images with
    their true and predicted masks."""

    best_key, save_best = "mIoU", True

    def __init__(self, loader, num_classes: int, class_names: list[str] | None, ignore_index: int, crop: int,
                 stride: int, every: int, total: int):
        self.loader, self.num_classes, self.names, self.ignore_index = loader, num_classes, class_names, ignore_index
        self.crop, self.stride, self.every, self.total = crop, stride, every, total
        self.skipped: dict[str, str] = {}  # validation pairs that could not be read: path -> reason

    @cached_property
    def pictured(self) -> list[tuple[Tensor, Tensor, int]]:
        """The first PICTURED readable validation samples (image, mask, index), read once: when first drawn."""
        dataset = self.loader.dataset
        return readable([dataset[i] for i in range(min(PICTURED, len(dataset)))])[0]

    def draw(self, trainer: Trainer, entry: dict[str, Any]) -> None:
        """The predictions on the pictured images now, into RUN/predictions/epoch-E.png and to the loggers;
        the picture's title, also its PNG text `caption` (with `step`, which orders them), names the epoch
        and the mIoU (the report shows them)."""
        if not self.pictured:  # none of them readable
            return
        model, config = trainer.model, trainer.model.config
        with eval_mode(model), trainer.runtime.autocast():
            predictions = [predicted_mask(model, image.to(trainer.device), self.num_classes, self.crop, self.stride)
                           for image, _, _ in self.pictured]
        mean, std = (torch.tensor(v).view(-1, 1, 1) for v in (config.mean, config.std))
        miou = "none" if entry["mIoU"] is None else f"{entry['mIoU']:.2f}"
        caption = f"epoch {entry['epoch']:g}, step {entry['step']}: mIoU {miou}"
        grid = segmentation_grid([image * std + mean for image, _, _ in self.pictured],
                                 [mask.numpy() for _, mask, _ in self.pictured], predictions,
                                 self.names or [str(c) for c in range(self.num_classes)], caption)
        text = PngInfo()
        text.add_text("caption", caption)
        text.add_text("step", str(entry["step"]))
        folder = trainer.output / "predictions"
        folder.mkdir(exist_ok=True)
        grid.save(folder / f"epoch-{entry['epoch']:03g}.png", pnginfo=text)
        trainer.log_image("predictions", grid, entry["step"])

    def evaluate(self, trainer: Trainer) -> dict[str, Any]:
        scores, skipped = segmentation_scores(trainer.model, self.loader, self.num_classes, self.ignore_index,
                                              self.crop, self.stride, trainer.runtime, self.names)
        self.skipped.update(skipped)
        return scores

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {f"val/{k}": entry[k] for k in ("mIoU", "mAcc", "aAcc") if entry[k] is not None}

    def line(self, entry: dict[str, Any]) -> str:
        return f"val {scores_line(entry)}"

    def on_record(self, trainer: Trainer, entry: dict[str, Any], point: str) -> None:
        self.draw(trainer, entry)


def evaluate_segmentation(request: EvaluationRequest) -> dict[str, Any]:
    """mIoU, mAcc, aAcc and per-class IoU / Acc of a segmentation run, measured as the run measures them
    (its crop, stride and ignore index), on its own validation data unless the request names other data."""
    run = load_run(request.checkpoint)
    record, model, runtime = run.record, run.model.to(request.runtime.device), request.runtime
    config = model.config
    data = request.data or record.data
    source = open_source(data, request.split, "mask", in_chans=config.in_chans, seed=record.seed,
                         scene_size=record.scene_size, scenes=record.scenes, val_scenes=record.val_scenes,
                         num_classes=record.num_classes, ignore_index=record.ignore_index,
                         reduce_zero=record.reduce_zero_label, mask_values=record.mask_values)
    loader = segmentation_loader(source, record.crop_size, config.mean, config.std,
                                 request.batch_size or EVAL_BATCH, request.num_workers)
    scores, skipped = segmentation_scores(model, loader, record.num_classes, record.ignore_index, record.crop_size,
                                          record.stride, runtime, record.classes, request.split, request.tta)
    return {**scores, "images": len(source) - len(skipped), "data": data,
            "skipped_files": [{"path": p, "reason": r} for p, r in skipped.items()]}


def scores_line(s: dict[str, Any]) -> str:
    return f"mIoU {s['mIoU']}  mAcc {s['mAcc']}  aAcc {s['aAcc']}"


def evaluation_lines(s: dict[str, Any]) -> list[str]:
    lines = [f"{scores_line(s)} on {s['images']} images of {s['data']} ({s['split']}), {s['checkpoint_evaluated']}"]
    if s.get("tta"):
        scales = ", ".join(f"{scale:g}" for scale in s["tta"]["scales"])
        lines.append(f"with test-time augmentation (flips, scales {scales}): {scores_line(s['tta'])}")
    return lines

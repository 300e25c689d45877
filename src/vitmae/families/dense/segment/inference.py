"""What a segmentation model predicts on images larger than it trained on: sliding windows with averaged
logits (mmsegmentation's slide inference), test-time augmentation (mmseg's flips and scales, averaged
probabilities), the predicted mask of one image, and `vitmae predict`'s masks and overlays. Every prediction
goes through `predicted_mask` or, for batches, these functions."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ....data import build_dataset, build_loader
from ....data.segmentation import write_index_mask
from ....data.files import ImageFilesSource
from ....data.source import require_readable
from ....data.transforms import NormalizeTransform
from ....errors import ConfigError
from ....viz.dense import Segmentation, segmentation_result
from ...spec import PredictionRequest
from ..record import SegmentRecord
from ...run import Run, output_names


@torch.no_grad()
def sliding_window_logits(model: nn.Module, images: Tensor, num_classes: int, crop: int, stride: int) -> Tensor:
    """Logits (N, classes, H, W) of images larger than `crop`, as mmseg's slide inference: windows of
    `crop` px every `stride` px (the last flush with the border), each pixel's logits averaged over the
    windows that cover it. An image no larger than the crop is predicted whole."""
    n, _, h, w = images.shape
    if h <= crop and w <= crop:
        return model(images)
    logits = images.new_zeros(n, num_classes, h, w)
    count = images.new_zeros(1, 1, h, w)
    for row in range(max(h - crop + stride - 1, 0) // stride + 1):
        for col in range(max(w - crop + stride - 1, 0) // stride + 1):
            y1, x1 = min(row * stride + crop, h), min(col * stride + crop, w)
            y0, x0 = max(y1 - crop, 0), max(x1 - crop, 0)
            logits[:, :, y0:y1, x0:x1] += model(images[:, :, y0:y1, x0:x1]).float()
            count[:, :, y0:y1, x0:x1] += 1
    return logits / count


TTA_SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75)  # mmseg's multi-scale test (ADE20K's ratios)


@torch.no_grad()
def tta_probabilities(model: nn.Module, images: Tensor, num_classes: int, crop: int, stride: int,
                      scales: tuple[float, ...] = TTA_SCALES, flip: bool = True) -> Tensor:
    """Class probabilities (N, classes, H, W) averaged over test-time augmentations, as mmseg's: the images
    resized by each of `scales` (bilinear) and, with `flip`, also flipped left-right; each view predicted by
    sliding windows (`crop`, `stride`) at its size, its softmax flipped back and resized to the images'."""
    size, total, views = images.shape[-2:], None, 0
    for scale in scales:  # a view keeps at least one patch
        scaled = images if scale == 1 else F.interpolate(
            images, size=[max(model.config.patch_size, round(side * scale)) for side in size], mode="bilinear",
            align_corners=False)
        for flipped in (False, True) if flip else (False,):
            view = scaled.flip(-1) if flipped else scaled
            probabilities = sliding_window_logits(model, view, num_classes, crop, stride).float().softmax(1)
            probabilities = probabilities.flip(-1) if flipped else probabilities
            if scale != 1:
                probabilities = F.interpolate(probabilities, size=size, mode="bilinear", align_corners=False)
            total, views = probabilities if total is None else total + probabilities, views + 1
    return total / views


@torch.no_grad()
def predicted_mask(model: nn.Module, image: Tensor, num_classes: int, crop: int, stride: int,
                   tta: bool = False) -> np.ndarray:
    """(H, W) class indices of `model` on one normalised image (C, H, W); larger than `crop`: by sliding
    windows (`crop`, `stride`); `tta`: averaged over mmseg's flips and scales (`tta_probabilities`)."""
    scores = (tta_probabilities if tta else sliding_window_logits)(model, image[None], num_classes, crop, stride)
    return scores[0].argmax(0).cpu().numpy()


def segment_image(model: nn.Module, class_names: list[str], crop: int, stride: int, image: Tensor,
                  display: int = 1, tta: bool = False) -> Segmentation:
    """A segmentation model's prediction on one image (C, H, W), normalised as `model.config` says (mean,
    std), drawn with the overlay enlarged towards `display` px: what `vitmae predict` writes and the demo
    shows. `tta`: with test-time augmentation."""
    config = model.config
    mask = predicted_mask(model, image, len(class_names), crop, stride, tta)
    return segmentation_result(image, mask, class_names, config.mean, config.std, display)


def predict_masks(run: Run[SegmentRecord], request: PredictionRequest) -> dict[str, Any]:
    """The index-mask and overlay PNGs of every readable image (one image per batch: they differ in size)."""
    if any(name.endswith(".json") for name in request.images):
        raise ConfigError("a COCO JSON lists detection images: give a segmentation run image files or folders")
    record, runtime, out = run.record, request.runtime, request.out
    model, config = run.model.to(runtime.device), run.model.config
    source = ImageFilesSource(request.images, config.in_chans)
    loader = build_loader(build_dataset(source, NormalizeTransform(config.mean, config.std)), 1, None,
                          request.num_workers, drop_last=False, persistent_workers=False)
    files = output_names(source.paths)
    images, skipped = [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            segmented = segment_image(model, record.class_names, record.crop_size, record.stride,
                                      batch.images[0].to(runtime.device), tta=request.tta)
        index = int(batch.indices[0])
        mask_file, overlay_file = (out / kind / f"{files[index]}.png" for kind in ("masks", "overlays"))
        for folder in (mask_file.parent, overlay_file.parent):
            folder.mkdir(parents=True, exist_ok=True)
        write_index_mask(segmented.mask, mask_file)
        segmented.overlay.save(overlay_file)
        images.append({"image": source.paths[index], "mask": str(mask_file), "overlay": str(overlay_file),
                       "classes": segmented.shares})
    require_readable(len(images), "the images given", (reason for _, reason in skipped))
    return {"images": images, "skipped_files": [{"path": p, "reason": r} for p, r in skipped],
            "tta": {"scales": list(TTA_SCALES), "flip": True} if request.tta else None}


def prediction_lines(s: dict[str, Any], out: Path) -> list[str]:
    return [f"masks and overlays of {len(s['images'])} images in {out / 'masks'} and {out / 'overlays'}"]

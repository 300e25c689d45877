"""Pictures of dense predictions: a class mask over its image with a legend (`vitmae predict`, the demo),
a grid of images with their true and predicted masks (a segmentation run's pictures at each evaluation),
detections drawn on their image (`vitmae predict`, the demo). What is drawn comes from the families'
inference (families.dense.segment and .detect); nothing here runs a model."""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..data.coco import decode_masks
from ..data.segmentation import PALETTE
from .reconstruction import enlarge, panel_grid

__all__ = ["SCORE_THRESHOLD", "Detections", "Segmentation", "detections_picture", "display_pixels", "draw_detections",
           "segmentation_grid", "segmentation_overlay", "segmentation_result"]

SWATCH, MARGIN = 12, 4  # legend: the side of a colour square, the space around things
GRID_TILE = 256  # a grid's images larger than this (px a side) are shrunk to fit it
COLOURS = np.asarray(PALETTE, dtype=np.float32).reshape(-1, 3)
SCORE_THRESHOLD = 0.5  # detections drawn: those scoring at least this (`vitmae predict`'s default, the demo's)


def display_pixels(image: Tensor) -> Tensor:
    """(3, H, W) uint8 of an image (C, H, W) in [0, 1]: as it shows (other channel counts than 3 averaged
    into grey; .npy values outside [0, 1] clipped)."""
    if image.shape[0] != 3:
        image = image.mean(0, keepdim=True).expand(3, -1, -1)
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def blend(image: Tensor, mask: np.ndarray, num_classes: int, alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8: the image (C, H, W) in [0, 1] under its class mask (H, W) in PALETTE's colours
    (`alpha` opaque); pixels of no class (the ignore index of a true mask) keep the image's colour."""
    pixels = display_pixels(image).permute(1, 2, 0).numpy().astype(np.float32)
    coloured = mask < num_classes
    blended = (1 - alpha) * pixels + alpha * COLOURS[np.where(coloured, mask, 0)]
    return np.rint(np.where(coloured[..., None], blended, pixels)).astype(np.uint8)


def with_legend(picture: Image.Image, classes: Sequence[int], class_names: list[str]) -> Image.Image:
    """`picture` with a legend at its right: a colour swatch and the name of each of `classes`."""
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(picture)
    boxes = [measure.textbbox((0, 0), class_names[c], font=font) for c in classes]
    row = max([SWATCH, *(b[3] - b[1] for b in boxes)]) + MARGIN
    legend_width = 3 * MARGIN + SWATCH + max((b[2] - b[0] for b in boxes), default=0)
    framed = Image.new("RGB", (picture.width + legend_width, max(picture.height, MARGIN + row * len(classes))),
                       "white")
    framed.paste(picture, (0, 0))
    draw = ImageDraw.Draw(framed)
    for i, c in enumerate(classes):
        x, y = picture.width + MARGIN, MARGIN + i * row
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=tuple(int(v) for v in COLOURS[c]), outline="black")
        draw.text((x + SWATCH + MARGIN, y), class_names[c], fill="black", font=font)
    return framed


def classes_in(masks: Sequence[np.ndarray], num_classes: int) -> list[int]:
    return sorted({int(c) for mask in masks for c in np.unique(mask) if c < num_classes})


def segmentation_overlay(image: Tensor, mask: np.ndarray, class_names: list[str], alpha: float = 0.5,
                         display: int = 1) -> Image.Image:
    """The image (C, H, W) in [0, 1] under its class mask (H, W) in PALETTE's colours (`alpha` opaque),
    enlarged (nearest) towards `display` px when smaller, and at its right a legend of the classes present,
    by name."""
    blended = enlarge(blend(image, mask, len(class_names), alpha), display)
    return with_legend(blended, classes_in([mask], len(class_names)), class_names)


def _fit(tile: np.ndarray, side: int) -> np.ndarray:
    """(side, side, 3): `tile` (H, W, 3) shrunk to fit if larger, centred on white."""
    if tile.shape[:2] == (side, side):
        return tile
    picture = Image.fromarray(tile)
    picture.thumbnail((side, side))
    square = Image.new("RGB", (side, side), "white")
    square.paste(picture, ((side - picture.width) // 2, (side - picture.height) // 2))
    return np.asarray(square)


def segmentation_grid(images: Sequence[Tensor], truths: Sequence[np.ndarray], predictions: Sequence[np.ndarray],
                      class_names: list[str], title: str | None = None) -> Image.Image:
    """One row per image (C, H, W) in [0, 1]: the image, its true mask over it, the predicted one; small
    images enlarged, images of other sizes fitted into one square; a legend of the classes in either mask."""
    n = len(class_names)
    columns = [[display_pixels(image).permute(1, 2, 0).numpy() for image in images],
               [blend(image, truth, n) for image, truth in zip(images, truths)],
               [blend(image, prediction, n) for image, prediction in zip(images, predictions)]]
    side = min(GRID_TILE, max(max(tile.shape[:2]) for tile in columns[0]))
    grid = panel_grid([np.stack([_fit(tile, side) for tile in column]) for column in columns],
                      ["image", "ground truth", "prediction"], title=title)
    return with_legend(grid, classes_in([*truths, *predictions], n), class_names)


class Segmentation(NamedTuple):
    mask: np.ndarray  # (H, W) the predicted class indices
    overlay: Image.Image  # the image under the coloured mask, a legend of the classes present at its right
    shares: dict[str, float]  # each class present: its share of the pixels, by name


def segmentation_result(image: Tensor, mask: np.ndarray, class_names: list[str], mean: Sequence[float],
                        std: Sequence[float], display: int = 1) -> Segmentation:
    """The predicted `mask` (H, W) of one image (C, H, W) normalised with `mean` and `std`: each class's share
    of the pixels, and the overlay enlarged towards `display` px (what `vitmae predict` writes and the demo
    shows)."""
    mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in (mean, std))
    counts = np.bincount(mask.ravel(), minlength=len(class_names))
    shares = {class_names[c]: round(int(counts[c]) / mask.size, 4) for c in np.flatnonzero(counts)}
    return Segmentation(mask, segmentation_overlay(image.cpu() * std + mean, mask, class_names, display=display),
                        shares)


def detections_picture(image: Tensor, detections: list[dict], names: dict[int, str]) -> Tensor:
    """(3, H, W) uint8: the image (C, H, W) in [0, 1] with the detections (COCO results of it: boxes, scores,
    and masks where they have them) drawn by torchvision's utilities, labelled with the category names
    `names`."""
    from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

    pixels = display_pixels(image)
    if not detections:
        return pixels
    if "segmentation" in detections[0]:
        masks = decode_masks([d["segmentation"] for d in detections], *pixels.shape[-2:]).bool()
        pixels = draw_segmentation_masks(pixels, masks, alpha=0.4)
    boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in (d["bbox"] for d in detections)])
    labels = [f"{names[d['category_id']]} {d['score']:.2f}" for d in detections]
    return draw_bounding_boxes(pixels, boxes, labels, width=1)


class Detections(NamedTuple):
    results: list[dict]  # every detection of the image: COCO results
    shown: list[dict]  # those scoring at least the threshold, drawn
    picture: Image.Image  # the image with them drawn


def draw_detections(image: Tensor, results: list[dict], names: dict[int, str], score_threshold: float = SCORE_THRESHOLD,
                    display: int = 1) -> Detections:
    """The detections (COCO results of the image (C, H, W) in [0, 1]) scoring at least `score_threshold`
    drawn on it by `detections_picture`, enlarged (nearest) towards `display` px when smaller: what `vitmae
    predict` writes and the demo shows."""
    shown = [r for r in results if r["score"] >= score_threshold]
    picture = detections_picture(image, shown, names).permute(1, 2, 0).numpy()
    return Detections(results, shown, enlarge(picture, display))

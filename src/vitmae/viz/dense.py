"""Pictures of dense predictions: a class mask over its image with a legend, detections drawn on theirs."""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ..data.coco import decode_masks
from ..data.segmentation import PALETTE

__all__ = ["detections_picture", "display_pixels", "segmentation_overlay"]

SWATCH, MARGIN = 12, 4  # legend: the side of a colour square, the space around things


def display_pixels(image: Tensor) -> Tensor:
    """(3, H, W) uint8 of an image (C, H, W) in [0, 1]: as it shows (other channel counts than 3 averaged
    into grey; .npy values outside [0, 1] clipped)."""
    if image.shape[0] != 3:
        image = image.mean(0, keepdim=True).expand(3, -1, -1)
    return (image.float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def segmentation_overlay(image: Tensor, mask: np.ndarray, class_names: list[str], alpha: float = 0.5) -> Image.Image:
    """The image (C, H, W) in [0, 1] under its class mask (H, W) in PALETTE's colours (`alpha` opaque), and
    at its right a legend of the classes present, by name."""
    pixels = display_pixels(image).permute(1, 2, 0).numpy().astype(np.float32)
    colours = np.asarray(PALETTE, dtype=np.float32).reshape(-1, 3)
    blended = Image.fromarray(np.rint((1 - alpha) * pixels + alpha * colours[mask]).astype(np.uint8))
    present = [int(c) for c in np.unique(mask)]
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(blended)
    boxes = [measure.textbbox((0, 0), class_names[c], font=font) for c in present]
    row = max(SWATCH, *(b[3] - b[1] for b in boxes)) + MARGIN
    legend_width = 3 * MARGIN + SWATCH + max(b[2] - b[0] for b in boxes)
    picture = Image.new("RGB", (blended.width + legend_width, max(blended.height, MARGIN + row * len(present))),
                        "white")
    picture.paste(blended, (0, 0))
    draw = ImageDraw.Draw(picture)
    for i, c in enumerate(present):
        x, y = blended.width + MARGIN, MARGIN + i * row
        draw.rectangle([x, y, x + SWATCH - 1, y + SWATCH - 1], fill=tuple(int(v) for v in colours[c]), outline="black")
        draw.text((x + SWATCH + MARGIN, y), class_names[c], fill="black", font=font)
    return picture


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

"""Where the encoder looks: the cls token's attention over the patches, per head, overlaid on the image."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps
from PIL import Image
from torch import Tensor

from ..errors import ConfigError
from ..model import MaskedAutoencoder
from .reconstruction import PANEL, Stats, load_for_viewing, load_images, panel_grid, to_uint8


def block_index(model: MaskedAutoencoder, layer: int) -> int:
    """`layer` as a block index 0..depth-1; negative counts from the end (-1 = the last block)."""
    depth = len(model.encoder.blocks)
    if not -depth <= layer < depth:
        raise ConfigError(f"layer {layer} does not exist: the encoder has {depth} blocks (0..{depth - 1}, "
                          "or -1 for the last)")
    return layer % depth


@torch.no_grad()
def attention_probs(model: MaskedAutoencoder, images: Tensor, layer: int = -1) -> Tensor:
    """Softmax attention (N, heads, 1 + L, 1 + L) of encoder block `layer` over all patches, no masking,
    cls token first: what the block computes from its input after norm1."""
    index = block_index(model, layer)
    encoder = model.encoder
    x = encoder.prepend_cls(encoder.embed_patches(images))
    for block in encoder.blocks[:index]:
        x = block(x)
    block = encoder.blocks[index]
    return block.attn.attention_probs(block.norm1(x))


def cls_attention(model: MaskedAutoencoder, images: Tensor, layer: int = -1) -> Tensor:
    """(N, heads, grid_h, grid_w): the cls token's attention to each patch (its attention to itself is
    left out, so a map sums to a little less than 1)."""
    return attention_probs(model, images, layer)[:, :, 0, 1:].unflatten(-1, model.grid_of(images))


def overlay(image: np.ndarray, attention: Tensor) -> np.ndarray:
    """(H, W, C) uint8 image and one (grid_h, grid_w) map -> (H, W, 3) uint8: the map, scaled to its own
    range, as an inferno heat map over a gray copy of the image; one colour per patch."""
    low, high = attention.min(), attention.max()
    scaled = (attention - low) / (high - low) if high > low else torch.zeros_like(attention)
    heat = F.interpolate(scaled[None, None].float(), size=image.shape[:2], mode="nearest")[0, 0].numpy()
    colours = colormaps["inferno"](heat)[..., :3]
    gray = image.mean(axis=-1, keepdims=True) / 255.0
    return ((0.35 * gray + 0.65 * colours) * 255 + 0.5).astype(np.uint8)


def attention_grid(images: Tensor, maps: Tensor, mean: Stats, std: Stats, panel: int = PANEL,
                   title: str | None = None) -> Image.Image:
    """One row per image: the image, one overlay per head, and the mean over the heads."""
    pixels = to_uint8(images, mean, std)
    per_head = [maps[:, h] for h in range(maps.shape[1])] + [maps.mean(dim=1)]
    columns = [pixels] + [np.stack([overlay(p, m) for p, m in zip(pixels, head)]) for head in per_head]
    headers = ["image"] + [f"head {h}" for h in range(maps.shape[1])] + ["mean"]
    note = "bright = more attention; each map is scaled to its own range"
    return panel_grid(columns, headers, panel, title, note)


def attention_file(checkpoint: str | Path, image: str | Path, out: str | Path, layer: int = -1,
                   **overrides: Any) -> Path:
    """`vitmae attention`: the picture for one image file, written to `out` (PNG)."""
    model, mean, std = load_for_viewing(checkpoint, **overrides)
    images = load_images([image], model, mean, std)
    maps = cls_attention(model, images, layer)
    index = block_index(model, layer)
    title = (f"{Path(checkpoint).name}: cls-token attention over the patches, encoder block {index} "
             f"(blocks 0..{len(model.encoder.blocks) - 1})")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    attention_grid(images, maps, mean, std, title=title).save(out)
    return out

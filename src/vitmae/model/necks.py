"""Feature pyramids (necks): from the encoder's patch maps to maps at several strides, for a dense head.

Both say what they give in one contract, detectron2's `Backbone.output_shape()`: `{name: ShapeSpec(channels,
stride)}` in the order of their outputs, the stride in input pixels per cell. A head is sized from it, and
a test holds each pyramid to it. The two:

- `FeaturePyramid`, mmsegmentation's for UperNet: four block maps to four levels at 4, 8, 16 and 32 input
  pixels a cell (with 16-px patches the recipe's 4x, 2x, 1x and 0.5x of the patch map). It is sized by the
  patch stride rather than by fixed scales of the patch map: with 4-px patches the map itself is the finest
  level, so neither the pyramid nor the head ever works at full resolution (which made them cost 3x the
  encoder per step). Each 2x transposed convolution halves the channels, as in ViTDet.
- `SimpleFeaturePyramid`, ViTDet's: the last block's map at 4, 2, 1 and 1/2 its scale (strides p/4 to 2p for
  patch size p), each to the same width, and an extra max-pooled level (4p).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import Tensor, nn

__all__ = ["FINEST_STRIDE", "FeaturePyramid", "PYRAMID_SCALES", "ShapeSpec", "SimpleFeaturePyramid"]

FINEST_STRIDE = 4  # input pixels per cell of FeaturePyramid's finest level
PYRAMID_SCALES = (4.0, 2.0, 1.0, 0.5)  # SimpleFeaturePyramid's levels, of the patch grid: strides p/4, p/2, p, 2p


class ShapeSpec(NamedTuple):
    channels: int
    stride: int  # input pixels per cell


class FeaturePyramid(nn.Module):
    """Four block maps (N, D, H/p, W/p) -> four levels "0".."3" at 4, 8, 16, 32 px per cell (see the module)."""

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        # how many 2x upsamplings bring the patch map to the finest level (at most 2, as in the recipe)
        ups = min(2, max(0, int(math.log2(patch_size / FINEST_STRIDE))))
        self.levels, self.channels, self.strides = nn.ModuleList(), [], []
        for level in range(4):
            scale = ups - level  # log2 of the level's size relative to the patch map
            layers: list[nn.Module] = []
            dim = embed_dim
            for i in range(max(scale, 0)):
                if i:
                    layers += [nn.BatchNorm2d(dim), nn.GELU()]
                layers.append(nn.ConvTranspose2d(dim, dim // 2, 2, stride=2))
                dim //= 2
            if scale < 0:  # ceil_mode: a 1x1 map stays 1x1 rather than vanishing
                layers.append(nn.MaxPool2d(2 ** -scale, ceil_mode=True))
            self.levels.append(nn.Sequential(*layers))
            self.channels.append(dim)
            self.strides.append(int(patch_size * 2.0 ** -scale))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {str(i): ShapeSpec(c, s) for i, (c, s) in enumerate(zip(self.channels, self.strides))}

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        return [level(x) for level, x in zip(self.levels, maps)]


def _simple_level(dim: int, scale: float, out_channels: int) -> nn.Sequential:
    """One level of the simple feature pyramid (detectron2's SimpleFeaturePyramid, norm="LN")."""
    if scale == 4.0:
        layers: list[nn.Module] = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2), LayerNorm2d(dim // 2), nn.GELU(),
                                   nn.ConvTranspose2d(dim // 2, dim // 4, 2, stride=2)]
        dim //= 4
    elif scale == 2.0:
        layers, dim = [nn.ConvTranspose2d(dim, dim // 2, 2, stride=2)], dim // 2
    elif scale == 1.0:
        layers = []
    else:
        layers = [nn.MaxPool2d(2, stride=2, ceil_mode=True)]  # a grid of odd size keeps its edge
    return nn.Sequential(*layers, nn.Conv2d(dim, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                         nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels))


class SimpleFeaturePyramid(nn.ModuleList):
    """The last block's map (N, D, H/p, W/p) -> levels "0".."3" at PYRAMID_SCALES of it and "pool" (ViTDet's;
    see the module), each `out_channels` wide. A ModuleList of the levels, so that its parameters keep
    the names of the checkpoints written before (`pyramid.<level>.<layer>`)."""

    def __init__(self, embed_dim: int, patch_size: int, out_channels: int):
        super().__init__(_simple_level(embed_dim, s, out_channels) for s in PYRAMID_SCALES)
        self.out_channels = out_channels
        self.strides = [int(patch_size / s) for s in PYRAMID_SCALES] + [4 * patch_size]

    def output_shape(self) -> dict[str, ShapeSpec]:
        names = [str(i) for i in range(len(PYRAMID_SCALES))] + ["pool"]
        return {name: ShapeSpec(self.out_channels, s) for name, s in zip(names, self.strides)}

    def forward(self, feature_map: Tensor) -> dict[str, Tensor]:
        maps = {str(i): level(feature_map) for i, level in enumerate(self)}
        maps["pool"] = F.max_pool2d(maps[str(len(self) - 1)], kernel_size=1, stride=2)  # torchvision's LastLevelMaxPool
        return maps

"""Semantic segmentation on the ViT encoder: mmsegmentation's MAE recipe (a feature pyramid from four
blocks, a UperNet head, an auxiliary FCN head) and a light baseline (`head="linear"`: BN + 1x1 conv on
the last block's map, the standard frozen-feature probe).

The pyramid is sized by the patch stride, not by fixed strides of the patch map: its levels are at 4, 8,
16 and 32 image pixels whatever the patch size. With 16-px patches that is the recipe's 4x, 2x, 1x and
0.5x of the patch map; with 4-px patches the map itself is the finest level, so neither the pyramid nor
the head ever works at full resolution (which made them cost 3x the encoder per step). Each 2x transposed
convolution halves the channels, as in ViTDet.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from .vit import ViTEncoder, param_groups, vit_layer_id

__all__ = ["Segmenter", "FeaturePyramid", "UperHead", "FCNHead", "LinearHead", "default_out_indices",
           "HEADS", "AUX_WEIGHT", "sliding_window_logits"]

HEADS = ("upernet", "linear")
AUX_WEIGHT = 0.4  # the auxiliary FCN head's loss weight in the mmseg recipe
FINEST_STRIDE = 4  # image pixels per cell of the pyramid's finest level


def default_out_indices(depth: int) -> list[int]:
    """The four blocks that feed the pyramid, spread as mmseg's recipes: the last, then back a third of
    the depth, then twice a sixth: 12 -> [3, 5, 7, 11], 24 -> [7, 11, 15, 23]; shallow encoders repeat."""
    step, last = max(1, round(depth / 6)), depth - 1
    return [max(0, last - k * step) for k in (4, 3, 2)] + [last]


def _conv(cin: int, cout: int, kernel: int) -> Conv2dNormActivation:
    """mmseg's ConvModule: conv (no bias), BatchNorm, ReLU."""
    return Conv2dNormActivation(cin, cout, kernel, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)


class FeaturePyramid(nn.Module):
    """Four block maps (N, D, H/p, W/p) -> four levels at 4, 8, 16, 32 px per cell (see the module)."""

    def __init__(self, embed_dim: int, patch_size: int):
        super().__init__()
        # how many 2x upsamplings bring the patch map to the finest level (at most 2, as in the recipe)
        ups = min(2, max(0, int(math.log2(patch_size / FINEST_STRIDE))))
        self.levels, self.channels = nn.ModuleList(), []
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

    def forward(self, maps: list[Tensor]) -> list[Tensor]:
        return [level(x) for level, x in zip(self.levels, maps)]


class UperHead(nn.Module):
    """mmseg's UPerHead: pyramid pooling (1, 2, 3, 6) on the coarsest level, FPN top-down fusion, all
    levels upsampled to the finest and fused by a 3x3 conv, dropout 0.1, a 1x1 classifier."""

    def __init__(self, in_channels: list[int], channels: int, num_classes: int, pool_scales=(1, 2, 3, 6)):
        super().__init__()
        self.psp = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(s), _conv(in_channels[-1], channels, 1))
                                 for s in pool_scales)
        self.psp_bottleneck = _conv(in_channels[-1] + len(pool_scales) * channels, channels, 3)
        self.lateral = nn.ModuleList(_conv(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(_conv(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = _conv(len(in_channels) * channels, channels, 3)
        self.classifier = nn.Sequential(nn.Dropout2d(0.1), nn.Conv2d(channels, num_classes, 1))

    def forward(self, levels: list[Tensor]) -> Tensor:
        top = levels[-1]
        pooled = [_resize(branch(top), top.shape[-2:]) for branch in self.psp]
        laterals = [conv(x) for conv, x in zip(self.lateral, levels)] + [self.psp_bottleneck(torch.cat([top, *pooled], 1))]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + _resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        return self.classifier(self.fpn_bottleneck(torch.cat([_resize(x, size) for x in outs], 1)))


class FCNHead(nn.Module):
    """mmseg's auxiliary FCNHead (one 3x3 conv, no input concatenation, dropout 0.1, 1x1 classifier)."""

    def __init__(self, in_channels: int, channels: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(_conv(in_channels, channels, 3), nn.Dropout2d(0.1),
                                  nn.Conv2d(channels, num_classes, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class LinearHead(nn.Module):
    """BN + 1x1 conv on the last block's map: the frozen-feature segmentation probe."""

    def __init__(self, embed_dim: int, num_classes: int):
        super().__init__()
        self.body = nn.Sequential(nn.BatchNorm2d(embed_dim), nn.Conv2d(embed_dim, num_classes, 1))

    def forward(self, levels: list[Tensor]) -> Tensor:
        return self.body(levels[-1])


class Segmenter(nn.Module):
    """Encoder + head; `forward` gives logits at the input's size (any size: the input is padded to a
    multiple of the patch size), and in training with the UperNet head (logits, auxiliary logits).
    State-dict keys: `encoder.*`, `pyramid.*`, `head.*`, `aux_head.*`; in files the encoder's are flat
    (as every vitmae model's: see flat_names)."""

    flat_components = ("encoder",)

    def __init__(self, encoder: ViTEncoder, num_classes: int, head: str = "upernet",
                 out_indices: list[int] | None = None, channels: int | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, not {head!r}")
        depth, dim = len(encoder.blocks), encoder.embed_dim
        self.encoder, self.num_classes, self.head_kind = encoder, num_classes, head
        self.out_indices = list(out_indices or default_out_indices(depth))
        if head == "linear":
            self.out_indices = self.out_indices[-1:]
            self.pyramid, self.head, self.aux_head = nn.Identity(), LinearHead(dim, num_classes), None
        else:
            # mmseg's 512 / 256 channels are for a 768-wide encoder; a narrower one gets narrower heads
            channels = channels or min(512, max(32, dim // 3 * 2))
            self.pyramid = FeaturePyramid(dim, encoder.patch_size)
            self.head = UperHead(self.pyramid.channels, channels, num_classes)
            self.aux_head = FCNHead(self.pyramid.channels[2], max(16, channels // 2), num_classes)
        # the features stop at the last block taken and skip the final norm: what comes after is unused,
        # so frozen (DDP requires a gradient for every trained parameter)
        for module in [encoder.norm, *encoder.blocks[max(self.out_indices) % depth + 1:]]:
            module.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        size, p = images.shape[-2:], self.encoder.patch_size
        if size[0] % p or size[1] % p:  # pad to a size the patches tile (with 0, the mean after
            images = F.pad(images, (0, -size[1] % p, 0, -size[0] % p))  # normalisation); cut back below
        taken = sorted(set(self.out_indices))  # a shallow encoder feeds one block to several levels
        maps = dict(zip(taken, self.encoder.forward_intermediates(images, taken, intermediates_only=True)))
        levels = self.pyramid([maps[i] for i in self.out_indices])
        logits = _resize(self.head(levels), images.shape[-2:])[..., :size[0], :size[1]]
        if self.training and self.aux_head is not None:
            return logits, _resize(self.aux_head(levels[2]), images.shape[-2:])[..., :size[0], :size[1]]
        return logits

    @property
    def config(self):
        """The encoder's ModelConfig (what a checkpoint of the segmenter records)."""
        return self.encoder.config

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of the encoder's blocks in backward."""
        self.encoder.set_grad_checkpointing(enable)

    # -- optimisation ----------------------------------------------------------------------------------
    @property
    def num_layers(self) -> int:
        return len(self.encoder.blocks) + 1

    def layer_id(self, name: str) -> int:
        """As the classifier's: the pyramid and the heads are past the last block (full learning rate)."""
        return vit_layer_id(name, self.num_layers)

    def param_groups(self, weight_decay: float, layer_decay: float = 1.0) -> list[dict]:
        """AdamW groups with layer-wise lr decay; no decay on 1-D parameters, biases and the embeddings."""
        return param_groups(self, weight_decay, self.layer_id, layer_decay, self.num_layers,
                            no_decay={"cls_token", "pos_embed"})


def _resize(x: Tensor, size) -> Tensor:
    return x if tuple(x.shape[-2:]) == tuple(size) else F.interpolate(x, size=tuple(size), mode="bilinear",
                                                                       align_corners=False)


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

"""Semantic segmentation on the ViT encoder: mmsegmentation's MAE recipe (a feature pyramid from four
blocks, `necks.FeaturePyramid`; a UperNet head; an auxiliary FCN head) and a light baseline
(`head="linear"`: BN + 1x1 conv on the last block's map, the standard frozen-feature probe).

The heads are registered in HEADS by name: each says how many blocks feed it and builds its pyramid, head
and auxiliary head from the encoder; `register_head` adds one.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import Conv2dNormActivation

from .necks import FeaturePyramid
from .vit import ViTEncoder, param_groups, vit_layer_id

__all__ = ["Segmenter", "FeaturePyramid", "UperHead", "FCNHead", "LinearHead", "default_out_indices",
           "HEADS", "AUX_WEIGHT", "HeadBatchNorm", "HeadParts", "SegmentationHead", "register_head"]

AUX_WEIGHT = 0.4  # the auxiliary FCN head's loss weight in the mmseg recipe


def default_out_indices(depth: int) -> list[int]:
    """The four blocks that feed the pyramid, spread as mmseg's recipes: the last, then back a third of
    the depth, then twice a sixth: 12 -> [3, 5, 7, 11], 24 -> [7, 11, 15, 23]; shallow encoders repeat."""
    step, last = max(1, round(depth / 6)), depth - 1
    return [max(0, last - k * step) for k in (4, 3, 2)] + [last]


class HeadBatchNorm(nn.BatchNorm2d):
    """The heads' BatchNorm. A batch of one image (batch size 1, or a batch that lost the others to
    unreadable files) can reach it as one value per channel: the UperNet's 1x1 pooling branch always, and
    any level 1x1 on a small crop. There are no batch statistics in one value; torch's BatchNorm raises
    ("Expected more than 1 value per channel when training"). Such a batch is normalised by the running
    statistics, as at evaluation, and leaves them as they are. Every other batch goes through
    nn.BatchNorm2d's own computation, bit for bit, so the published head's numbers stay (mmseg's own answer
    is SyncBN with at least 2 images per GPU)."""

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.numel() == x.shape[1]:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _conv(cin: int, cout: int, kernel: int) -> Conv2dNormActivation:
    """mmseg's ConvModule: conv (no bias), BatchNorm, ReLU."""
    return Conv2dNormActivation(cin, cout, kernel, norm_layer=HeadBatchNorm, activation_layer=nn.ReLU)


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
        self.body = nn.Sequential(HeadBatchNorm(embed_dim), nn.Conv2d(embed_dim, num_classes, 1))

    def forward(self, levels: list[Tensor]) -> Tensor:
        return self.body(levels[-1])


class HeadParts(NamedTuple):
    pyramid: nn.Module  # block maps -> levels
    head: nn.Module  # levels -> logits
    aux_head: nn.Module | None  # levels[2] -> logits, trained on alongside (None: no auxiliary loss)


class SegmentationHead(NamedTuple):
    blocks: int  # how many encoder blocks feed it: the last of the out indices
    # (encoder, classes, head width, auxiliary head width; None: upernet_widths)
    build: Callable[[ViTEncoder, int, int | None, int | None], HeadParts]


def upernet_widths(embed_dim: int, channels: int | None = None) -> tuple[int, int]:
    """The UperNet and auxiliary FCN widths sized for an encoder `embed_dim` wide (or UperNet's as given):
    two thirds of the encoder's width, 32 to 512, and half that. mmseg's MAE recipe has 768 and 256 for
    ViT-B's 768 (`--recipe paper`); these are narrower, for small data."""
    channels = channels or min(512, max(32, embed_dim // 3 * 2))
    return channels, max(16, channels // 2)


def upernet(encoder: ViTEncoder, num_classes: int, channels: int | None, aux_channels: int | None) -> HeadParts:
    """mmseg's MAE recipe: the four-level pyramid, UperNet and the auxiliary FCN head on the third level."""
    dim = encoder.embed_dim
    sized, sized_aux = upernet_widths(dim, channels)
    pyramid = FeaturePyramid(dim, encoder.patch_size)
    levels = [shape.channels for shape in pyramid.output_shape().values()]
    return HeadParts(pyramid, UperHead(levels, sized, num_classes),
                     FCNHead(levels[2], aux_channels or sized_aux, num_classes))


def linear(encoder: ViTEncoder, num_classes: int, channels: int | None, aux_channels: int | None) -> HeadParts:
    """The frozen-feature probe: BN + 1x1 conv on the last block's map, no pyramid."""
    return HeadParts(nn.Identity(), LinearHead(encoder.embed_dim, num_classes), None)


HEADS: dict[str, SegmentationHead] = {"upernet": SegmentationHead(4, upernet), "linear": SegmentationHead(1, linear)}


def register_head(name: str, head: SegmentationHead) -> None:
    """Make `head` a choice of `Segmenter` (and of `vitmae segment --head`)."""
    if name in HEADS:
        raise ValueError(f"a segmentation head named {name!r} is registered already")
    HEADS[name] = head


class Segmenter(nn.Module):
    """Encoder + head; `forward` gives logits at the input's size (any size: the input is padded to a
    multiple of the patch size), and in training with the UperNet head (logits, auxiliary logits).
    State-dict keys: `encoder.*`, `pyramid.*`, `head.*`, `aux_head.*`; in files the encoder's are flat
    (as every vitmae model's: see flat_names)."""

    flat_components = ("encoder",)

    def __init__(self, encoder: ViTEncoder, num_classes: int, head: str = "upernet",
                 out_indices: list[int] | None = None, channels: int | None = None, aux_channels: int | None = None):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, not {head!r}")
        depth = len(encoder.blocks)
        self.encoder, self.num_classes, self.head_kind = encoder, num_classes, head
        self.out_indices = list(out_indices or default_out_indices(depth))[-HEADS[head].blocks:]
        self.pyramid, self.head, self.aux_head = HEADS[head].build(encoder, num_classes, channels, aux_channels)
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

"""ViTDet: the plain ViT encoder as a detection backbone (Li et al., 2022), inside torchvision's detectors.

The backbone reads the encoder through its components: `embed_patches` (position-embedded patch tokens at
any resolution; no cls token), then the same pre-trained `Block`s, most of them on non-overlapping windows
of the token grid and a few evenly spaced ones on the whole grid (ViT-B: blocks 2, 5, 8, 11). The last
block's map feeds a simple feature pyramid: scales 4, 2, 1 and 1/2 of the patch grid, each to 256
channels, and an extra max-pooled level. The strides are therefore p/4, p/2, p, 2p and 4p for patch size
p: 4-64 px for 16-px patches (ViTDet's 4-32 plus the pooled level), 2-32 for 8-px, 1-16 for 4-px patches.

Departures from detectron2's ViTDet, both for the sake of loading every checkpoint unchanged: no relative
position biases (the absolute table only, kept as the checkpoint has it: a sin-cos table is recomputed or
interpolated per `config.pos_embed_resize`, a learned one interpolated); and window padding happens
before the block (padded tokens go through `norm1`), because the block is called as it is.
"""
from __future__ import annotations

from collections import OrderedDict

import torch.nn.functional as F
from timm.layers import DropPath
from torch import Tensor, nn

from .necks import PYRAMID_SCALES, ShapeSpec, SimpleFeaturePyramid
from .vit import ViTEncoder, param_groups

FEATURE_NAMES = ("0", "1", "2", "3")  # torchvision's names of the pyramid levels; "pool" is the extra one


def default_global_blocks(depth: int) -> list[int]:
    """Four evenly spaced blocks ending with the last (ViT-B, depth 12: 2, 5, 8, 11; ViT-L: 5, 11, 17, 23)."""
    return sorted({max(0, (i + 1) * depth // 4 - 1) for i in range(4)})


def window_partition(x: Tensor, window: tuple[int, int]) -> tuple[Tensor, tuple[int, int]]:
    """(N, H, W, D) -> (N * windows, wh * ww, D), zero-padding H and W to multiples of the window;
    returns the padded grid too."""
    n, h, w, d = x.shape
    wh, ww = window
    pad_h, pad_w = -h % wh, -w % ww
    if pad_h or pad_w:
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    hp, wp = h + pad_h, w + pad_w
    x = x.view(n, hp // wh, wh, wp // ww, ww, d).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, wh * ww, d), (hp, wp)


def window_unpartition(windows: Tensor, window: tuple[int, int], padded: tuple[int, int],
                       grid: tuple[int, int]) -> Tensor:
    """The inverse of `window_partition`, padding removed: (N, H, W, D)."""
    wh, ww = window
    hp, wp = padded
    d = windows.shape[-1]
    x = windows.view(-1, hp // wh, wp // ww, wh, ww, d).permute(0, 1, 3, 2, 4, 5).reshape(-1, hp, wp, d)
    return x[:, :grid[0], :grid[1]]


class ViTDetBackbone(nn.Module):
    """A `ViTEncoder` with window attention and a simple feature pyramid: `forward(images)` returns an
    OrderedDict of (N, out_channels, H/s, W/s) maps named "0".."3" and "pool" (strides `self.strides`),
    as torchvision's detectors take them (`out_channels` says the width)."""

    def __init__(self, encoder: ViTEncoder, window_size: int = 14, global_blocks: list[int] | None = None,
                 out_channels: int = 256, drop_path: float = 0.0):
        super().__init__()
        depth, p, dim = len(encoder.blocks), encoder.patch_size, encoder.embed_dim
        if p % 4:
            raise ValueError(f"the patch size {p} is not a multiple of 4: the pyramid's finest level is p/4")
        if dim % 4:
            raise ValueError(f"the encoder width {dim} is not a multiple of 4 (the pyramid's finest level)")
        self.encoder = encoder
        self.window_size = window_size
        self.global_blocks = sorted(default_global_blocks(depth) if global_blocks is None else global_blocks)
        if not all(0 <= i < depth for i in self.global_blocks):
            raise ValueError(f"global blocks {self.global_blocks} are outside 0..{depth - 1}")
        # The cls token and the final norm are not used (ViTDet reads the last block's tokens): frozen, so
        # that no parameter goes without a gradient (DDP) and the optimizer leaves them out.
        encoder.cls_token.requires_grad_(False)
        encoder.norm.requires_grad_(False)
        for i, block in enumerate(encoder.blocks):  # stochastic depth grows with depth, as in fine-tuning
            rate = drop_path * i / max(depth - 1, 1)
            block.drop_path = DropPath(rate) if rate > 0 else nn.Identity()
        self.pyramid = SimpleFeaturePyramid(dim, p, out_channels)
        self.out_channels = out_channels  # torchvision's detectors read it
        self.strides = tuple(shape.stride for shape in self.output_shape().values())
        self.size_divisible = max(self.strides)  # every level's map then tiles the image exactly

    def blocks_forward(self, images: Tensor) -> Tensor:
        """The last block's patch tokens as a map (N, D, H/p, W/p)."""
        grid = self.encoder.grid_of(images)
        x = self.encoder.embed_patches(images).unflatten(1, grid)  # (N, H, W, D)
        # A grid smaller than the window is one window, without padding tokens.
        window = (min(self.window_size, grid[0]), min(self.window_size, grid[1]))
        for i, block in enumerate(self.encoder.blocks):
            if i in self.global_blocks:
                x = self.encoder.run_block(block, x.flatten(1, 2)).unflatten(1, grid)
            else:
                windows, padded = window_partition(x, window)
                x = window_unpartition(self.encoder.run_block(block, windows), window, padded, grid)
        return x.permute(0, 3, 1, 2)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the activations of the encoder's blocks (windowed or global) in backward."""
        self.encoder.set_grad_checkpointing(enable)

    def output_shape(self) -> dict[str, ShapeSpec]:
        """The maps `forward` gives: the pyramid's."""
        return self.pyramid.output_shape()

    def forward(self, images: Tensor) -> "OrderedDict[str, Tensor]":
        return OrderedDict(self.pyramid(self.blocks_forward(images)))

    # -- optimisation ----------------------------------------------------------------------------------
    def layer_id(self, name: str) -> int:
        """The layer of a backbone parameter for layer-wise lr decay (names relative to the backbone):
        embeddings 0, block i i + 1, the pyramid depth + 1."""
        if name.startswith("encoder.blocks."):
            return int(name.split(".")[2]) + 1
        if name.startswith("encoder."):
            return 0
        return len(self.encoder.blocks) + 1


def build_detector(backbone: ViTDetBackbone, num_classes: int, masks: bool, img_size: tuple[int, int],
                   mean: tuple[float, ...], std: tuple[float, ...], **kwargs) -> nn.Module:
    """torchvision's Faster R-CNN (or Mask R-CNN with `masks`) on the ViTDet backbone: one anchor size
    per level (8 strides: 32-512 px for 16-px patches) at three aspect ratios, RoIAlign over the four
    pyramid levels, and an input transform that keeps images of `img_size` at their size (the data's
    transforms resize them) and pads batches to a multiple of the coarsest stride. `num_classes` counts
    the object classes; the background is added. `kwargs` go to the detector (thresholds, sizes)."""
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops import MultiScaleRoIAlign

    sizes = tuple((8 * s,) for s in backbone.strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    # The heads scale with the pyramid's width: torchvision's own (a 1024-wide box MLP, 256-wide mask
    # convolutions) at 256 channels, proportionally smaller ones for the tiny detectors of a CPU.
    width = backbone.out_channels
    common = dict(min_size=min(img_size), max_size=max(img_size), image_mean=list(mean), image_std=list(std),
                  rpn_anchor_generator=anchors, box_roi_pool=MultiScaleRoIAlign(list(FEATURE_NAMES), 7, 2),
                  box_head=TwoMLPHead(width * 7 * 7, 4 * width), **kwargs)
    if masks:
        model = MaskRCNN(backbone, None, mask_roi_pool=MultiScaleRoIAlign(list(FEATURE_NAMES), 14, 2),
                         box_predictor=FastRCNNPredictor(4 * width, num_classes + 1),
                         mask_head=MaskRCNNHeads(width, (width,) * 4, 1),
                         mask_predictor=MaskRCNNPredictor(width, width, num_classes + 1), **common)
    else:
        model = FasterRCNN(backbone, None, box_predictor=FastRCNNPredictor(4 * width, num_classes + 1), **common)
    model.transform.size_divisible = backbone.size_divisible
    return model


def vitdet(encoder: ViTEncoder, num_classes: int, masks: bool, img_size: tuple[int, int], window_size: int = 14,
           global_blocks: list[int] | None = None, pyramid_channels: int = 256, proposals: int = 1000,
           detections_per_image: int = 100, rois_per_image: int = 512, drop_path: float = 0.0) -> nn.Module:
    """The detector `vitmae detect` trains (and its detector.json rebuilds): `build_detector` on a ViTDet
    backbone of `encoder`, normalising with the encoder's recorded mean and std; `proposals` region
    proposals per image at evaluation, twice as many in training (torchvision's 1000 / 2000).
    `model.config` is the encoder's, which its checkpoints record."""
    backbone = ViTDetBackbone(encoder, window_size, global_blocks, pyramid_channels, drop_path)
    model = build_detector(backbone, num_classes, masks, img_size, encoder.config.mean, encoder.config.std,
                           box_detections_per_img=detections_per_image, box_batch_size_per_image=rois_per_image,
                           rpn_pre_nms_top_n_train=2 * proposals, rpn_post_nms_top_n_train=2 * proposals,
                           rpn_pre_nms_top_n_test=proposals, rpn_post_nms_top_n_test=proposals)
    model.config = encoder.config
    return model


def detector_param_groups(model: nn.Module, weight_decay: float, layer_decay: float) -> list[dict]:
    """ViTDet's AdamW groups: no weight decay on norms, biases and position tables; the backbone's
    encoder with layer-wise lr decay (`layer_decay ** (depth + 1 - layer)`), the rest at the full lr."""
    backbone: ViTDetBackbone = model.backbone
    depth = len(backbone.encoder.blocks)

    def layer_id(name: str) -> int:
        return backbone.layer_id(name[len("backbone."):]) if name.startswith("backbone.") else depth + 1

    return param_groups(model, weight_decay, layer_id, layer_decay, depth + 1,
                        no_decay={"backbone.encoder.pos_embed", "backbone.encoder.cls_token"})


__all__ = ["FEATURE_NAMES", "PYRAMID_SCALES", "ViTDetBackbone", "build_detector", "default_global_blocks",
           "detector_param_groups", "vitdet", "window_partition", "window_unpartition"]

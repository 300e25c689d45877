"""`vitmae segment`: semantic segmentation on the encoder of any checkpoint `load_pretrained` reads (or
from scratch), mmsegmentation's MAE recipe through the one engine (resume, DDP, signals, mixed precision):
a pyramid from four blocks, UperNet + an auxiliary FCN head (loss weight 0.4), AdamW with layer-wise lr
decay 0.65 and drop path 0.1; or `--head linear`, the frozen-feature probe (BN + 1x1 conv on the last
block's map, the encoder frozen).

    RUN/checkpoints/step-N/   the last checkpoint (resumable);  RUN/checkpoints/best/  the best mIoU's weights
    RUN/segmenter.json        what rebuilds the model and finds the data again (`vitmae predict`, `vitmae
                              evaluate`): classes, head, blocks, crop, stride, ignore index, mask values,
                              data, encoder
    RUN/metrics.json          mIoU, mAcc, aAcc, per-class IoU / Acc by name, the validation pixels of each
                              class and the classes without one (empty_classes), the per-epoch history
    RUN/predictions/epoch-E.png   at each evaluation, the first 8 validation images: image | true mask |
                              predicted mask, titled with the epoch and mIoU (`vitmae report` shows them;
                              TensorBoard's `predictions` too)
    RUN/metrics.jsonl, RUN/tensorboard/ (val/mIoU, val/mAcc, val/aAcc), RUN/config.yaml

A folder's masks are scanned before training (`check_masks`): masks read wrongly (hand-made 0/255 masks
with 255 the ignore index, ...) stop the run in one line that says what to pass (`--binary-masks`,
`--mask-values`, `--ignore-index`); classes without a pixel and masks training will skip are one line each.

Validation images larger than the crop are predicted by sliding windows (crop, stride) with averaged
logits. The schedule is mmsegmentation's, per iteration: linear warm-up, then poly (`--schedule poly`,
linear decay to --min-lr).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data import DataError, build_dataset, open_source
from ..data.mask_scan import scan_masks
from ..data.scenes import FASHION_SCENES, FashionScenesSource
from ..data.segmentation import BINARY_MASK_VALUES, SegmentationFolderSource, SegmentationTransform, collate_masks
from ..data.source import mark_reported
from ..errors import ConfigError
from ..families.dense import SegmentRecord
from ..families.dense import segment as segmentation
from ..families.dense.sizing import (PAPER_SEGMENT, PHOTO_CROP, RECIPE_HELP, RECIPES, sampled_sizes, segment_sizing,
                                     upernet_sizing)
from ..families.encoder import prepared_encoder
from ..model.segmentation import HEADS
from ..options import opt, save_config
from ..train import Trainer, write_json
from ..train.config import TrainOptions
from .options import CHECKPOINT_HELP, EncoderOptions, SceneOptions, Task, redefault

__all__ = ["SegmentOptions", "segment"]

log = logging.getLogger(__name__)


@dataclass
class SegmentOptions(SceneOptions, EncoderOptions, TrainOptions):
    """`vitmae segment`: semantic segmentation on a pre-trained encoder (mmseg's MAE recipe)."""

    output: str = redefault(TrainOptions, "output", "runs/segment")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP.replace("none: random", "none: from scratch"))
    data: str = opt(FASHION_SCENES, "fashion-scenes | a folder DIR/{train,val}/{images,masks}/ (index-mask PNGs, "
                    "optional DIR/classes.txt)")
    num_classes: int | None = opt(None, "classes of a folder without classes.txt", min=1)
    head: str = opt("upernet", "decoder: upernet (pyramid + UperNet + auxiliary FCN) | linear (BN + 1x1 conv on "
                    "the frozen encoder's last block: the probe)", choices=lambda: list(HEADS))
    out_indices: tuple[int, ...] | None = opt(None, "the four encoder blocks that feed the pyramid, e.g. 3,5,7,11 "
                                              "(default: spread by depth as mmseg's)")
    ignore_index: int = opt(255, "mask value left out of the loss and the metrics", min=0)
    reduce_zero_label: bool = opt(False, "ADE20K's convention: mask 0 is ignored, class k is k - 1")
    mask_values: tuple[int, ...] | None = opt(None, "the mask value of each class in order, e.g. 0,255: value k "
                                              "read as class k, any other value ignored (default: a value is its "
                                              "class)", min=0)
    binary_masks: bool = opt(False, "hand-made binary masks, 0 the background and 255 the object: read 255 as "
                             "class 1 (--mask-values 0,255)")
    crop_size: int | None = opt(None, "training crop and sliding window, px (default: the encoder's training size, "
                                f"at most the images' median short side and {PHOTO_CROP}; --recipe paper: 512)", min=8)
    stride: int | None = opt(None, "sliding-window stride at evaluation (default: 2/3 of the crop)", min=1)
    head_channels: int | None = opt(None, "UperNet's width (default: two thirds of the encoder's, at most 512; "
                                    f"--recipe paper: {PAPER_SEGMENT['head_channels']})", min=8)
    aux_channels: int | None = opt(None, "the auxiliary FCN head's width (default: half UperNet's; --recipe paper: "
                                   f"{PAPER_SEGMENT['aux_channels']})", min=8)
    recipe: str = opt("auto", RECIPE_HELP.format("mmseg's crop 512, stride 341, UperNet 768 channels, auxiliary "
                                                 "head 256"), choices=RECIPES)
    epochs: int = redefault(TrainOptions, "epochs", 20)
    batch_size: int = redefault(TrainOptions, "batch_size", 16)
    lr: float | None = redefault(TrainOptions, "lr", 1e-4)
    warmup_epochs: float = redefault(TrainOptions, "warmup_epochs", 1.0)
    schedule: str = redefault(TrainOptions, "schedule", "poly")
    layer_decay: float = opt(0.65, "layer-wise lr decay: block i gets lr * decay^(depth - i)", above=0, max=1)
    drop_path: float = opt(0.1, "stochastic depth rate of the last block (upernet)", min=0, below=1)
    eval_every_epochs: int = opt(1, "evaluate mIoU every N epochs (and at the end)", min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.binary_masks and self.mask_values is not None:
            raise ConfigError("give --binary-masks or --mask-values, not both (--binary-masks is --mask-values "
                              "0,255)")
        if self.head != "upernet" and (self.head_channels or self.aux_channels):
            raise ConfigError(f"--head-channels and --aux-channels are UperNet's widths; --head {self.head} has none")

    def mask_value_list(self) -> list[int] | None:
        """The mask value of each class (what the run records), or None: a value is its class."""
        return list(BINARY_MASK_VALUES) if self.binary_masks else None if self.mask_values is None else list(self.mask_values)


def segment(cfg: SegmentOptions) -> dict[str, Any]:
    """Train as `cfg` says; returns the summary also written to RUN/metrics.json."""
    encoder = prepared_encoder(cfg.checkpoint, cfg.model, cfg.seed, cfg.model_overrides(), cfg.data)
    config = encoder.config
    mean, std = config.mean, config.std
    mask_values = cfg.mask_value_list()
    train, val = (open_source(cfg.data, split, "mask", in_chans=config.in_chans, seed=cfg.seed,
                              scene_size=cfg.scene_size, scenes=cfg.scenes, val_scenes=cfg.val_scenes,
                              num_classes=cfg.num_classes, ignore_index=cfg.ignore_index,
                              reduce_zero=cfg.reduce_zero_label, mask_values=mask_values)
                  for split in ("train", "val"))
    check_masks(train, val)
    scenes = isinstance(train, FashionScenesSource)
    names = train.classes
    num_classes = len(names) if names else train.num_classes
    trained_at = None if cfg.checkpoint.lower() == "none" and cfg.img_size is None else min(config.img_size)
    sizing = segment_sizing(cfg.recipe, cfg.crop_size, cfg.stride, trained_at, [(cfg.scene_size,) * 2] if scenes
                            else sampled_sizes(train.paths, config.in_chans), config.patch_size)
    if cfg.head == "upernet":
        sizing = sizing.merged(upernet_sizing(cfg.recipe, cfg.head_channels, cfg.aux_channels, config.embed_dim))
    cfg = sizing.applied(cfg)
    crop, stride = cfg.crop_size, cfg.stride
    model = segmentation.build_model(encoder, num_classes, cfg.head, cfg.out_indices, cfg.drop_path, cfg.seed,
                                     cfg.head_channels, cfg.aux_channels)
    model.class_names = names

    dataset = build_dataset(train, SegmentationTransform(crop, mean, std, ignore_index=cfg.ignore_index), cfg.seed)
    val_loader = segmentation.segmentation_loader(val, crop, mean, std, cfg.batch_size, cfg.num_workers)
    evaluator = segmentation.SegmentationEvaluator(val_loader, num_classes, names, cfg.ignore_index, crop, stride,
                                                   cfg.eval_every_epochs, cfg.epochs)
    objective = segmentation.SegmentationObjective(cfg.ignore_index, cfg.seed)
    groups = segmentation.FAMILY.param_groups(model, cfg.weight_decay, cfg.layer_decay)
    trainer = Trainer(model, objective, dataset, cfg, groups=groups, betas=(0.9, 0.999), hooks=[evaluator],
                      collate_fn=collate_masks, cost_options=("crop_size", "head", "head_channels"),
                      shard_units=segmentation.shard_units)
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    record = SegmentRecord(
        classes=names, num_classes=num_classes, head=cfg.head, out_indices=model.out_indices,
        pos_embed=model.encoder.pos_embed_kind, crop_size=crop, stride=stride, ignore_index=cfg.ignore_index,
        reduce_zero_label=cfg.reduce_zero_label, mask_values=mask_values, data=cfg.data if scenes else str(Path(cfg.data).resolve()),
        scenes=cfg.scenes, val_scenes=cfg.val_scenes, scene_size=cfg.scene_size, seed=cfg.seed,
        model=config.to_dict(), recipe=cfg.recipe, sized=sizing.reasons, head_channels=cfg.head_channels,
        aux_channels=cfg.aux_channels)
    if trainer.dist.is_main:
        save_config(cfg, output)
        record.write(output)
        if sizing.line():
            tqdm.write(sizing.line())
    summary = trainer.fit()
    # every rank evaluated, so every rank has the summary (and the CLI reports it); rank 0 writes it
    history, best = trainer.extra_state["history"], trainer.extra_state["best"]
    final = history[-1]
    summary = {**summary, **{k: final[k] for k in ("mIoU", "mAcc", "aAcc", "per_class")},
               "best": {k: best[k] for k in ("epoch", "step", "mIoU")}, "history": history,
               "init": cfg.checkpoint, "head": cfg.head, "out_indices": model.out_indices,
               "num_classes": num_classes, "classes": names, "ignore_index": cfg.ignore_index,
               "reduce_zero_label": cfg.reduce_zero_label, "mask_values": mask_values,
               "empty_classes": final["empty_classes"], "pixels": final["pixels"], "crop_size": crop, "stride": stride,
               "head_channels": cfg.head_channels, "aux_channels": cfg.aux_channels, "recipe": cfg.recipe,
               "sized": sizing.reasons,
               "train_images": len(train), "val_images": len(val),
               "val_skipped_files": [{"path": p, "reason": r} for p, r in evaluator.skipped.items()],
               "model": config.to_dict()}
    if trainer.dist.is_main:
        write_json(output / "metrics.json", summary)
    return summary


def check_masks(train, val) -> None:
    """A segmentation folder's masks scanned before training (data/mask_scan.py): DataError on the training
    masks' refusal (read wrongly: binary masks with 255 ignored, ...); the warnings of both splits logged
    once each, in place of one per skipped file."""
    if not isinstance(train, SegmentationFolderSource):  # fashion-scenes: masks made as class ids
        return
    scans = [scan_masks(source) for source in (train, val)]
    if refusal := scans[0].refusal():
        raise DataError(refusal)
    for scan in scans:
        for line in scan.warnings():
            log.warning(line)
        mark_reported(scan.skipped_paths)


def report(s: dict[str, Any], cfg: SegmentOptions) -> list[str]:
    values = f", mask values {','.join(map(str, s['mask_values']))}" if s.get("mask_values") else ""
    return [f"{segmentation.scores_line(s)} on {s['val_images']} validation images "
            f"({s['num_classes']} classes, {s['head']} head{values}); best mIoU {s['best']['mIoU']} at epoch "
            f"{s['best']['epoch']:g}",
            f"{s['steps']} steps on {s['train_images']} images; last checkpoint {s['checkpoint']}"]


TASK = Task("segment", "semantic segmentation on a pre-trained encoder (UperNet or a linear probe)",
            SegmentOptions, segment, report)

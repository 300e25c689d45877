"""`vitmae segment`: semantic segmentation on the encoder of any checkpoint `load_pretrained` reads (or
from scratch), mmsegmentation's MAE recipe through the one engine (resume, DDP, signals, mixed precision):
a pyramid from four blocks, UperNet + an auxiliary FCN head (loss weight 0.4), AdamW with layer-wise lr
decay 0.65 and drop path 0.1; or `--head linear`, the frozen-feature probe (BN + 1x1 conv on the last
block's map, the encoder frozen).

    RUN/checkpoints/step-N/   the last checkpoint (resumable);  RUN/checkpoints/best/  the best mIoU's weights
    RUN/segmenter.json        what rebuilds the model and finds the data again (`vitmae predict`, `vitmae
                              evaluate`): classes, head, blocks, crop, stride, ignore index, data, encoder
    RUN/metrics.json          mIoU, mAcc, aAcc, per-class IoU / Acc by name, the per-epoch history
    RUN/predictions/epoch-E.png   at each evaluation, the first 8 validation images: image | true mask |
                              predicted mask, titled with the epoch and mIoU (`vitmae report` shows them;
                              TensorBoard's `predictions` too)
    RUN/metrics.jsonl, RUN/tensorboard/ (val/mIoU, val/mAcc, val/aAcc), RUN/config.yaml

Validation images larger than the crop are predicted by sliding windows (crop, stride) with averaged
logits. The schedule is mmsegmentation's, per iteration: linear warm-up, then poly (`--schedule poly`,
linear decay to --min-lr).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL.PngImagePlugin import PngInfo
from torch import Tensor, nn

from ..data import Batch, build_dataset, readable
from ..data.augment import seeded_global_rngs
from ..data.scenes import FASHION_SCENES, FashionScenesSource
from ..data.segmentation import SegmentationTransform, build_segmentation_source, collate_masks
from ..data.transforms import mix_seed
from ..errors import ConfigError
from ..model import ViTEncoder
from ..model.segmentation import AUX_WEIGHT, HEADS, Segmenter
from ..options import opt, save_config
from ..train import Trainer, write_json
from ..train.config import TrainConfig
from ..viz.dense import predicted_mask, segmentation_grid
from ..train.hooks import PeriodicEvaluation
from ..families.encoder import load_encoder_or_random, normalization
from .common import segmentation_loader, segmentation_scores, write_run_record
from .options import CHECKPOINT_HELP, EncoderOptions, SceneOptions, Task, redefault

__all__ = ["SegmentConfig", "SegmentationObjective", "SegmentationEvaluator", "build_model", "segment"]

PHOTO_CROP = 512  # the recipe's crop for real photographs; small images are cropped at their own size
PICTURED = 8  # validation images whose predictions each evaluation draws (RUN/predictions/)


@dataclass
class SegmentConfig(SceneOptions, EncoderOptions, TrainConfig):
    """`vitmae segment`: semantic segmentation on a pre-trained encoder (mmseg's MAE recipe)."""

    output: str = redefault(TrainConfig, "output", "runs/segment")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP.replace("none: random", "none: from scratch"))
    data: str = opt(FASHION_SCENES, "fashion-scenes | a folder DIR/{train,val}/{images,masks}/ (index-mask PNGs, "
                    "optional DIR/classes.txt)")
    num_classes: int | None = opt(None, "classes of a folder without classes.txt", min=1)
    head: str = opt("upernet", "decoder: upernet (pyramid + UperNet + auxiliary FCN) | linear (BN + 1x1 conv on "
                    "the frozen encoder's last block: the probe)", choices=HEADS)
    out_indices: tuple[int, ...] | None = opt(None, "the four encoder blocks that feed the pyramid, e.g. 3,5,7,11 "
                                              "(default: spread by depth as mmseg's)")
    ignore_index: int = opt(255, "mask value left out of the loss and the metrics", min=0)
    reduce_zero_label: bool = opt(False, "ADE20K's convention: mask 0 is ignored, class k is k - 1")
    crop_size: int | None = opt(None, f"training crop and sliding window, px (default: fashion-scenes' own size, "
                                f"{PHOTO_CROP} for folders)", min=8)
    stride: int | None = opt(None, "sliding-window stride at evaluation (default: 2/3 of the crop)", min=1)
    epochs: int = redefault(TrainConfig, "epochs", 20)
    batch_size: int = redefault(TrainConfig, "batch_size", 16)
    lr: float | None = redefault(TrainConfig, "lr", 1e-4)
    warmup_epochs: float = redefault(TrainConfig, "warmup_epochs", 1.0)
    schedule: str = redefault(TrainConfig, "schedule", "poly")
    layer_decay: float = opt(0.65, "layer-wise lr decay: block i gets lr * decay^(depth - i)", above=0, max=1)
    drop_path: float = opt(0.1, "stochastic depth rate of the last block (upernet)", min=0, below=1)
    eval_every_epochs: int = opt(1, "evaluate mIoU every N epochs (and at the end)", min=1)


class SegmentationObjective:
    """Cross-entropy over the labeled pixels, plus 0.4 x the auxiliary head's. Dropout and drop path draw
    from torch's global generator seeded by (seed, step, micro-batch, rank), so a resumed run draws as the
    uninterrupted one (however many loaders were started in between)."""

    def __init__(self, ignore_index: int, seed: int, rank: int = 0):
        self.ignore_index, self.seed, self.rank = ignore_index, seed, rank

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        with seeded_global_rngs(mix_seed(self.seed, step, micro, self.rank)):
            out = model(batch.images)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = F.cross_entropy(logits.float(), batch.targets, ignore_index=self.ignore_index)
        if aux is not None:
            loss = loss + AUX_WEIGHT * F.cross_entropy(aux.float(), batch.targets, ignore_index=self.ignore_index)
        return loss


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
        was_training = model.training
        model.eval()
        with trainer.runtime.autocast():
            predictions = [predicted_mask(model, image.to(trainer.device), self.num_classes, self.crop, self.stride)
                           for image, _, _ in self.pictured]
        model.train(was_training)
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
        return f"val mIoU {entry['mIoU']}  mAcc {entry['mAcc']}  aAcc {entry['aAcc']}"

    def on_record(self, trainer: Trainer, entry: dict[str, Any], point: str) -> None:
        self.draw(trainer, entry)


def build_model(cfg: SegmentConfig, encoder: ViTEncoder, num_classes: int) -> Segmenter:
    """The segmenter on a copy of `encoder` with the run's drop path (the linear probe: frozen, none)."""
    torch.manual_seed(cfg.seed)
    linear = cfg.head == "linear"
    own = ViTEncoder(encoder.config, 0.0 if linear else cfg.drop_path)
    if encoder.pos_embed_kind == "learned":  # a fine-tuned encoder's table trains on
        own.learn_pos_embed()
    own.load_state_dict(encoder.state_dict())
    depth = len(own.blocks)
    if cfg.out_indices is not None and (len(cfg.out_indices) != 4 or not all(-depth <= i < depth for i in cfg.out_indices)):
        raise ConfigError(f"--out-indices takes four block indices of 0..{depth - 1}, not {list(cfg.out_indices)}")
    if linear:
        own.requires_grad_(False)
    return Segmenter(own, num_classes, cfg.head, list(cfg.out_indices) if cfg.out_indices else None)


def segment(cfg: SegmentConfig) -> dict[str, Any]:
    """Train as `cfg` says; returns the summary also written to RUN/metrics.json."""
    holder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides())
    config = holder.encoder.config
    mean, std = normalization(config, cfg.data)
    holder.encoder.config = config = config.replace(mean=mean, std=std)  # recorded in every checkpoint
    train, val = (build_segmentation_source(cfg.data, split, cfg.num_classes, cfg.ignore_index, cfg.reduce_zero_label,
                                            config.in_chans, cfg.seed, cfg.scene_size, cfg.scenes,
                                            cfg.val_scenes)
                  for split in ("train", "val"))
    scenes = isinstance(train, FashionScenesSource)
    names = train.classes
    num_classes = len(names) if names else train.num_classes
    crop = cfg.crop_size or (cfg.scene_size if scenes else PHOTO_CROP)
    stride = cfg.stride or max(1, crop * 2 // 3)
    model = build_model(cfg, holder.encoder, num_classes)
    model.class_names = names

    dataset = build_dataset(train, SegmentationTransform(crop, mean, std, ignore_index=cfg.ignore_index), cfg.seed)
    val_loader = segmentation_loader(val, crop, mean, std, cfg.batch_size, cfg.num_workers)
    evaluator = SegmentationEvaluator(val_loader, num_classes, names, cfg.ignore_index, crop, stride,
                                      cfg.eval_every_epochs, cfg.epochs)
    objective = SegmentationObjective(cfg.ignore_index, cfg.seed)
    trainer = Trainer(model, objective, dataset, cfg, groups=model.param_groups(cfg.weight_decay, cfg.layer_decay),
                      betas=(0.9, 0.999), hooks=[evaluator], collate_fn=collate_masks)
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    record = {"classes": names, "num_classes": num_classes, "head": cfg.head, "out_indices": model.out_indices,
              "pos_embed": model.encoder.pos_embed_kind, "crop_size": crop, "stride": stride,
              "ignore_index": cfg.ignore_index, "reduce_zero_label": cfg.reduce_zero_label,
              "data": cfg.data if scenes else str(Path(cfg.data).resolve()), "scenes": cfg.scenes,
              "val_scenes": cfg.val_scenes, "scene_size": cfg.scene_size, "seed": cfg.seed, "model": config.to_dict()}
    if trainer.dist.is_main:
        save_config(cfg, output)
        write_run_record("segment", output, record)
    summary = trainer.fit()
    # every rank evaluated, so every rank has the summary (and the CLI reports it); rank 0 writes it
    history, best = trainer.extra_state["history"], trainer.extra_state["best"]
    final = history[-1]
    summary = {**summary, **{k: final[k] for k in ("mIoU", "mAcc", "aAcc", "per_class")},
               "best": {k: best[k] for k in ("epoch", "step", "mIoU")}, "history": history,
               "init": cfg.checkpoint, "head": cfg.head, "out_indices": model.out_indices,
               "num_classes": num_classes, "classes": names, "ignore_index": cfg.ignore_index,
               "reduce_zero_label": cfg.reduce_zero_label, "crop_size": crop, "stride": stride,
               "train_images": len(train), "val_images": len(val),
               "val_skipped_files": [{"path": p, "reason": r} for p, r in evaluator.skipped.items()],
               "model": config.to_dict()}
    if trainer.dist.is_main:
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: SegmentConfig) -> list[str]:
    return [f"mIoU {s['mIoU']}  mAcc {s['mAcc']}  aAcc {s['aAcc']} on {s['val_images']} validation images "
            f"({s['num_classes']} classes, {s['head']} head); best mIoU {s['best']['mIoU']} at epoch "
            f"{s['best']['epoch']:g}",
            f"{s['steps']} steps on {s['train_images']} images; last checkpoint {s['checkpoint']}"]


TASK = Task("segment", "semantic segmentation on a pre-trained encoder (UperNet or a linear probe)",
            SegmentConfig, segment, report)

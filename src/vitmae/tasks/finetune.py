"""`vitmae finetune`: a ViT classifier initialised from a pre-trained encoder (or from scratch), trained by
the one engine with the official MAE fine-tuning recipe, evaluated every epoch.

    RUN/checkpoints/step-N/     the last checkpoint (resumable; `latest` names it)
    RUN/checkpoints/best/       the weights with the best validation top-1 so far (with --model-ema: the
                                moving average's, which is also what top1 / top5 measure)
    RUN/metrics.json            top1, top5 (the final model), best_top1 / best_epoch, per-epoch history
    RUN/metrics.jsonl, RUN/tensorboard/
    RUN/config.yaml             the options, with the augmentation the images chose; `model: null` when the
                                model came from a checkpoint (named with its format in a comment on top)

Randomness: crops, flips, RandAugment and random erasing are per sample (see data.augment); mixup /
cutmix (timm's `Mixup`, which draws from NumPy's global generator) run with that generator seeded by
(seed, step, micro-batch, rank) and restored afterwards, so a resumed run mixes as the uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from ..data import EvalTransform, build_dataset
from ..data.augment import FinetuneTransform
from ..data.labels import class_names
from ..errors import ConfigError
from ..families import classify
from ..families.encoder import model_source, normalization, prepared_encoder, save_run_config
from ..model import POOLS, ModelConfig, model_config, to_2tuple
from ..options import opt
from ..train import Trainer, write_json
from ..train.config import TrainOptions
from ..train.hooks import ModelEma
from .options import (CHECKPOINT_HELP, ClipTrainingOptions, ClipViewOptions, EncoderOptions, LabeledDataOptions, Task,
                      clip_view_options, redefault)


@dataclass
class FinetuneOptions(LabeledDataOptions, ClipViewOptions, ClipTrainingOptions, EncoderOptions, TrainOptions):
    """`vitmae finetune`: the official MAE fine-tuning recipe (AdamW, layer-wise lr decay, drop path,
    warmup + cosine, mixup / cutmix / label smoothing, RandAugment, random erasing).

    Augmentation options left unset take defaults that follow the images (see `augmentation`): the
    official ImageNet ones (mixup 0.8, cutmix 1.0, RandAugment, random erasing 0.25, crops from 8% of
    the image) for RGB images larger than 64 px on their shorter side; a light recipe (crops from 80%,
    flip, label smoothing; no mixup, cutmix, RandAugment or erasing) for small images (64 px or less,
    like 28-px Fashion-MNIST or 32-px CIFAR, even converted to RGB) and for images that are not RGB.
    The heavy recipe regularises a ViT-B for 100 epochs of ImageNet; on 28-px images it costs accuracy."""

    output: str = redefault(TrainOptions, "output", "runs/finetune")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP.replace("none: random", "none: from scratch"))
    epochs: int = redefault(TrainOptions, "epochs", 20)
    batch_size: int = redefault(TrainOptions, "batch_size", 128)
    blr: float = redefault(TrainOptions, "blr", 1e-3)
    min_lr: float = redefault(TrainOptions, "min_lr", 1e-6)
    warmup_epochs: float = redefault(TrainOptions, "warmup_epochs", 2.0)
    pool: str = opt("mean", "classify from: mean (the mean patch token + fc_norm, the official recipe) | cls "
                    "(the cls token after the final norm, as Hugging Face's classifier)", choices=POOLS)
    layer_decay: float = opt(0.75, "layer-wise lr decay: block i gets lr * decay^(depth - i)", above=0, max=1)
    drop_path: float = opt(0.1, "stochastic depth rate of the last block", min=0, below=1)
    mixup: float | None = opt(None, "mixup alpha (default: 0.8 for RGB images over 64 px, else 0)", min=0)
    cutmix: float | None = opt(None, "cutmix alpha (default: 1.0 for RGB images over 64 px, else 0)", min=0)
    smoothing: float = opt(0.1, "label smoothing", min=0, below=1)
    randaug: bool | None = opt(None, "RandAugment (default: on for RGB images over 64 px)")
    randaug_policy: str = opt("rand-m9-mstd0.5-inc1", "timm RandAugment policy")
    reprob: float | None = opt(None, "random erasing probability (default: 0.25 for RGB images over 64 px, else 0)",
                               min=0, max=1)
    crop_min_scale: float | None = opt(None, "smallest crop area of RandomResizedCrop (default: 0.08, the "
                                       "official one, for RGB images over 64 px, else 0.8)", above=0, max=1)
    hflip: float = opt(0.5, "horizontal flip probability", min=0, max=1)
    model_ema: bool = opt(False, "evaluate and keep an exponential moving average of the weights (timm "
                          "ModelEmaV3, warm-up)")
    model_ema_decay: float = opt(0.9999, "the moving average's decay (its longest horizon)", above=0, below=1)
    eval_every_epochs: int = opt(1, "evaluate on the validation images every N epochs (and at the end)", min=1)

    def augmentation(self, in_chans: int, img_size: int | tuple[int, int]) -> dict[str, Any]:
        """The augmentation options with their image-dependent defaults filled in: the official recipe for
        RGB images over 64 px on their shorter side, the light one otherwise (see the class docstring)."""
        heavy = in_chans == 3 and min(to_2tuple(img_size)) > 64
        defaults = dict(mixup=0.8 if heavy else 0.0, cutmix=1.0 if heavy else 0.0, randaug=heavy,
                        reprob=0.25 if heavy else 0.0, crop_min_scale=0.08 if heavy else 0.8)
        return {k: default if getattr(self, k) is None else getattr(self, k) for k, default in defaults.items()}


def describe_augmentation(aug: dict[str, Any], cfg: FinetuneOptions, config: ModelConfig) -> str:
    """One line: the augmentation a fine-tuning run uses, and why (the defaults follow the images)."""
    h, w = config.img_size
    what = f"{config.num_frames}-frame clips of {h}x{w}" if config.is_video else f"{h}x{w} images"
    flip = f"flip {aug['hflip']:g}" + (" (a mirror changes the label)" if aug["hflip"] != cfg.hflip else "")
    parts = [f"crops of {aug['crop_min_scale']:g}-1 of the area", flip,
             f"label smoothing {cfg.smoothing:g}", f"mixup {aug['mixup']:g}", f"cutmix {aug['cutmix']:g}",
             f"RandAugment {cfg.randaug_policy if aug['randaug'] else 'off'}", f"random erasing {aug['reprob']:g}"]
    return f"augmentation for {what} with {config.in_chans} channel(s): {', '.join(parts)}"


def finetune(cfg: FinetuneOptions) -> dict[str, Any]:
    """Fine-tune as `cfg` says; returns the summary also written to RUN/metrics.json."""

    if not cfg.checkpoint:
        raise ConfigError("give --checkpoint PATH (a pre-trained model) or --checkpoint none (from scratch)")
    scratch = cfg.checkpoint.lower() == "none"
    encoder = None if scratch else prepared_encoder(cfg.checkpoint, cfg.model, cfg.seed, cfg.model_overrides(),
                                                    cfg.data)
    config = model_config(cfg.model, **cfg.model_overrides()) if scratch else encoder.config
    mean, std = normalization(config, cfg.data)
    config = config.replace(mean=mean, std=std)  # recorded in every checkpoint of the run
    clips = {"target": "clip", "clip_label": cfg.clip_label, "clips": cfg.clips} if config.is_video else {}
    labeled = classify.labeled_data(cfg.data, cfg.val_data, config.in_chans, cfg.seed, cfg.labels_fraction,
                                    cfg.labels_per_class, **clips)
    train_all, train, val, val_description, num_classes = labeled
    names = class_names(train_all, num_classes)
    model = classify.build_model(encoder, config, num_classes, cfg.pool, cfg.drop_path, cfg.seed)
    model.class_names = names

    aug = {**cfg.augmentation(config.in_chans, config.img_size), "hflip": cfg.hflip}
    interval = sized = None
    if config.is_video:  # VideoMAE's recipe: crops, flips, mixup and cutmix; RandAugment and erasing are images'
        aug.update(randaug=False, reprob=0.0, hflip=0.0 if classify.flip_changes_label(train_all) else cfg.hflip)
        transform, val_transform, interval, sized = classify.clip_transforms(
            config, mean, std, train_all, clip_view_options(cfg), aug["crop_min_scale"], aug["hflip"], cfg.repeat_aug)
    else:
        transform = FinetuneTransform(config.img_size, mean, std, scale=(aug["crop_min_scale"], 1.0),
                                      hflip=cfg.hflip, randaug=cfg.randaug_policy if aug["randaug"] else None,
                                      reprob=aug["reprob"])
        val_transform = EvalTransform(config.img_size, mean, std)
    dataset = build_dataset(train, transform, cfg.seed)
    if cfg.model_ema and cfg.strategy == "fsdp":  # the average would be a whole copy on every rank
        raise ConfigError("--model-ema with --strategy fsdp is not supported: use --strategy ddp")
    ema = ModelEma(cfg.model_ema_decay) if cfg.model_ema else None
    val_loader = classify.eval_loader(val, val_transform, cfg.batch_size, cfg.num_workers)
    evaluator = classify.ClassifierEvaluator(val_loader, cfg.eval_every_epochs, cfg.epochs,
                                             averaged=(lambda: ema.module) if ema else None)
    objective = classify.ClassificationObjective(num_classes, cfg.smoothing, aug["mixup"], aug["cutmix"], cfg.seed)
    trainer = Trainer(model, objective, dataset, cfg, groups=model.param_groups(cfg.weight_decay, cfg.layer_decay),
                      betas=(0.9, 0.999), hooks=[ema, evaluator] if ema else [evaluator],
                      shard_units=classify.shard_units)
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    if trainer.dist.is_main:
        source = model_source(cfg.checkpoint, config, cfg.model)
        save_run_config(cfg, output, source, **aug)
        tqdm.write(describe_augmentation(aug, cfg, config))
        if sized:
            tqdm.write(sized)
    summary = trainer.fit()
    if trainer.dist.is_main:
        best = output / "checkpoints" / "best"
        summary = {**summary, **evaluator.results(trainer),
                   "init": "scratch" if scratch else cfg.checkpoint,
                   **classify.label_summary(labeled, cfg.labels_fraction, cfg.labels_per_class),
                   "val": val_description, "val_images": len(val), "num_classes": num_classes, "classes": names,
                   "pool": cfg.pool, "global_pool": model.global_pool, "augmentation": aug,
                   "layer_decay": cfg.layer_decay, "drop_path": cfg.drop_path, "smoothing": cfg.smoothing,
                   "model_ema_decay": cfg.model_ema_decay if ema else None,
                   "best_checkpoint": str(best) if best.exists() else None,
                   "last_checkpoint": summary["checkpoint"], "model": config.to_dict(),
                   **({"frame_interval": interval, "repeat_aug": cfg.repeat_aug,
                       "test_views": [cfg.test_clips, cfg.test_crops]} if config.is_video else {}),
                   "model_source": source}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: FinetuneOptions) -> list[str]:
    unit, rate = ("videos", "clips/s") if "test_views" in s else ("images", "img/s")
    return [f"top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on {s['val']} ({s['val_images']} {unit}); "
            f"best top-1 {s['best_top1']:.2f}% at epoch {s['best_epoch']:g}",
            f"{s['steps']} steps on {s['train_images']} labeled {unit}, {s['img_s']:.0f} {rate}; "
            f"last checkpoint {s['last_checkpoint']}, best {s['best_checkpoint']}"]


TASK = Task("finetune", "fine-tune a classifier from a pre-trained encoder (or from scratch)", FinetuneOptions,
            finetune, report)

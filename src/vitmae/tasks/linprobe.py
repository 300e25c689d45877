"""`vitmae linprobe`: the official MAE linear probe. The encoder is frozen; its cls-token feature goes
through BatchNorm1d(affine=False, eps 1e-6) and a Linear layer (trunc_normal std 0.01), trained with LARS
(momentum 0.9, trust coefficient 0.001, no weight decay), lr = blr * batch / 256, warmup + cosine.

Since the encoder is frozen, by default the features of the un-augmented images are computed once and the
engine trains the probe on them (fast: the probe is one layer). `--no-cache-features` runs the encoder on
every step with RandomResizedCrop + flip, as the official recipe. The probe's modules: model/probe.py.

    RUN/metrics.json       top1, top5, best_top1, per-epoch history
    RUN/classifier/        with cls pooling: encoder + probe folded into one ViTClassifier (global_pool
                           token), which `vitmae evaluate` and the timm / Hugging Face exports take
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import PretrainTransform, build_dataset, build_loader
from ..data.clips import ClipSampling, TrainClips
from ..data.labels import class_names
from ..families import classify
from ..families.encoder import load_encoder_or_random, model_source, save_run_config
from ..families.features import FeatureDataset, encode_source
from ..model import POOLS, ModelConfig
from ..model.probe import FrozenEncoderProbe, LinearProbe, frozen, probe_to_classifier
from ..model.vit import param_groups
from ..options import opt
from ..train import Trainer, write_json
from ..train.checkpoint import save_weights
from ..train.config import TrainOptions
from ..train.lars import LARS
from ..train.runtime import Runtime
from .options import (CHECKPOINT_HELP, POOL_HELP, ClipViewOptions, EncoderOptions, LabeledDataOptions, Task,
                      clip_view_options, redefault)


@dataclass
class LinprobeOptions(LabeledDataOptions, ClipViewOptions, EncoderOptions, TrainOptions):
    """`vitmae linprobe`: the official linear probe: frozen encoder, cls-token features,
    BatchNorm1d(affine=False) + Linear, LARS, lr = blr * batch / 256, no weight decay.

    LARS moves each weight matrix by about lr * 0.001 of its norm per step, so the official blr (0.1 for
    90 epochs of ImageNet at batch 16384) suits large labeled sets; a few thousand labels need more epochs
    and a larger blr."""

    output: str = redefault(TrainOptions, "output", "runs/linprobe")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP)
    epochs: int = redefault(TrainOptions, "epochs", 90)
    batch_size: int = redefault(TrainOptions, "batch_size", 512)
    blr: float = redefault(TrainOptions, "blr", 0.1)
    weight_decay: float = redefault(TrainOptions, "weight_decay", 0.0)
    warmup_epochs: float = redefault(TrainOptions, "warmup_epochs", 10.0)
    pool: str = opt("cls", POOL_HELP, choices=POOLS)
    cache_features: bool = opt(True, "compute the frozen encoder's features once (no augmentation); else crop + "
                               "flip every step")
    crop_min_scale: float = opt(0.08, "smallest crop area of RandomResizedCrop, without --cache-features",
                                above=0, max=1)
    eval_every_epochs: int = opt(1, "evaluate on the validation images every N epochs (and at the end)", min=1)


def linprobe(cfg: LinprobeOptions) -> dict[str, Any]:
    """Train and evaluate a linear probe as `cfg` says; returns the summary also written to metrics.json."""
    encoder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides()).encoder
    labeled, mean, std, evaluation, interval = classify.frozen_encoder_data(
        encoder, cfg.data, cfg.val_data, cfg.seed, cfg.labels_fraction, cfg.labels_per_class, clip_view_options(cfg))
    train_all, train, val, val_description, num_classes = labeled
    config = encoder.config
    torch.manual_seed(cfg.seed)
    probe = LinearProbe(encoder.embed_dim, num_classes, config)
    train_cfg = cfg
    start = time.perf_counter()
    if cfg.cache_features:
        runtime = Runtime(cfg.device, cfg.precision)
        encoder = frozen(encoder)
        train_features = encode_source(encoder, train, evaluation, cfg.pool, runtime, 256, cfg.num_workers)
        val_features = encode_source(encoder, val, evaluation, cfg.pool, runtime, 256, cfg.num_workers)
        dataset = FeatureDataset(train_features.features, train_features.labels)
        val_set = FeatureDataset(val_features.features, val_features.labels)
        model = probe
        val_loader = build_loader(val_set, cfg.batch_size, None, 0, drop_last=False, persistent_workers=False)
        train_cfg = dataclasses.replace(cfg, num_workers=0)  # rows of a tensor: workers would only add copies
    else:
        if config.is_video:  # the clips' crops and flips (none where a mirror changes the label)
            transform = TrainClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std,
                                   scale=(cfg.crop_min_scale, 1.0), hflip=0.0 if classify.flip_changes_label(train_all)
                                   else 0.5)
        else:
            transform = PretrainTransform(config.img_size, mean, std, scale=(cfg.crop_min_scale, 1.0))
        dataset = build_dataset(train, transform, cfg.seed)
        model = FrozenEncoderProbe(encoder, probe, cfg.pool)
        val_loader = classify.eval_loader(val, evaluation, cfg.batch_size, cfg.num_workers)
    feature_time = time.perf_counter() - start

    evaluator = classify.ClassifierEvaluator(val_loader, cfg.eval_every_epochs, cfg.epochs)
    objective = classify.ClassificationObjective(num_classes, 0.0, 0.0, 0.0, cfg.seed)
    groups = param_groups(model, cfg.weight_decay)
    trainer = Trainer(model, objective, dataset, train_cfg, groups=groups,
                      make_optimizer=lambda groups, lr: LARS(groups, lr=lr, weight_decay=cfg.weight_decay),
                      hooks=[evaluator])
    output = Path(cfg.output)
    if trainer.dist.is_main:
        source = model_source(cfg.checkpoint, config, cfg.model)
        save_run_config(cfg, output, source)
    summary = trainer.fit()
    if trainer.dist.is_main:
        classifier_dir = None
        if cfg.pool == "cls" and isinstance(encoder.norm, nn.LayerNorm):
            classifier = probe_to_classifier(encoder, probe.cpu())
            classifier.class_names = class_names(train_all, num_classes)
            classifier_dir = str(save_weights(classifier, output / "classifier"))
        summary = {**summary, **evaluator.results(trainer), "checkpoint_encoder": cfg.checkpoint,
                   **classify.label_summary(labeled, cfg.labels_fraction, cfg.labels_per_class),
                   "val": val_description, "val_images": len(val),
                   "num_classes": num_classes, "pool": cfg.pool, "cache_features": cfg.cache_features,
                   "feature_time_s": round(feature_time, 2), "classifier": classifier_dir,
                   "model": config.to_dict(), "model_source": source}
        write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: LinprobeOptions) -> list[str]:
    unit = "videos" if ModelConfig.from_dict(s["model"]).is_video else "images"
    lines = [f"linear probe top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on {s['val']} ({s['val_images']} "
             f"{unit}), {s['train_images']} labeled training {unit}"]
    if s.get("classifier"):
        lines.append(f"encoder + probe as one classifier: {s['classifier']}")
    return lines


TASK = Task("linprobe", "linear probe of a frozen encoder (BatchNorm + Linear, LARS)", LinprobeOptions, linprobe,
            report)

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

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..config import ConfigError, FinetuneConfig, ModelConfig, model_config, save_config
from ..data import Batch, EvalTransform, build_dataset, build_loader, default_normalization
from ..data.augment import FinetuneTransform, seeded_global_rngs
from ..data.labels import Source, class_names, label_subset, labeled_splits, num_classes_of
from ..data.transforms import mix_seed
from ..interop.vitmae_format import save_vitmae
from ..model.classifier import ViTClassifier, from_pretrained_encoder
from ..train import Hook, Trainer, write_json
from ..train.checkpoint import write_text_atomic
from .evaluate import predict, topk_accuracy

LabeledSources = tuple[Source, Source, str]  # (train, validation, where the validation images come from)


class ClassificationObjective:
    """Cross-entropy with label smoothing, or soft-target cross-entropy on mixup / cutmix batches."""

    def __init__(self, num_classes: int, smoothing: float, mixup: float, cutmix: float, seed: int, rank: int = 0):
        self.smoothing, self.seed, self.rank = smoothing, seed, rank
        self.mixup = None
        if mixup > 0 or cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                               label_smoothing=smoothing, num_classes=num_classes)

    def __call__(self, model: nn.Module, batch: Batch, step: int, micro: int) -> Tensor:
        images, labels = batch.images, batch.labels
        if self.mixup is None:
            return F.cross_entropy(model(images), labels, label_smoothing=self.smoothing)
        if len(images) % 2:  # timm's batch mixing pairs each sample with its mirror: needs an even count
            images, labels = images[:-1], labels[:-1]
        with seeded_global_rngs(mix_seed(self.seed, step, micro, self.rank)):
            images, targets = self.mixup(images, labels)
        return torch.sum(-targets * F.log_softmax(model(images).float(), dim=-1), dim=-1).mean()


def save_weights(model: nn.Module, path: Path) -> Path:
    """Weights and config (vitmae format) into the directory `path`, replaced whole."""
    tmp, old = path.with_name(f".tmp-{path.name}"), path.with_name(f".old-{path.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    save_vitmae(model, tmp)
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return path


class ModelEma(Hook):
    """An exponential moving average of the weights, updated after every optimizer step (timm's
    ModelEmaV3 with its warm-up: the decay grows towards `decay` with the step count, so a short run
    averages over a window that fits it). The average lives in the run's training state, so a resumed
    run averages on."""

    def __init__(self, decay: float):
        if not 0.0 < decay < 1.0:
            raise ConfigError(f"--model-ema-decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.ema = None

    def on_start(self, trainer: Trainer) -> None:
        from timm.utils import ModelEmaV3

        self.ema = ModelEmaV3(trainer.model, decay=self.decay, use_warmup=True)
        if "ema" in trainer.extra_state:  # resumed
            self.ema.module.load_state_dict(trainer.extra_state["ema"])
        # The state dict's tensors are the average's own, updated in place: every checkpoint saves them.
        trainer.extra_state["ema"] = self.ema.module.state_dict()

    def on_step_end(self, trainer: Trainer) -> None:
        self.ema.update(trainer.model, step=trainer.progress.step)

    @property
    def module(self) -> nn.Module:
        """The averaged model."""
        return self.ema.module


class ClassifierEvaluator(Hook):
    """Top-1 / top-5 and loss on validation batches every `every_epochs` epochs and at the end; the history
    lives in `trainer.extra_state` (so it survives a resume) and the best model is kept in
    RUN/checkpoints/best. With `ema`, the weights evaluated and kept are the moving average's."""

    def __init__(self, loader, every_epochs: int, total_epochs: int, save_best: bool = True,
                 ema: ModelEma | None = None):
        self.loader, self.every, self.total, self.save_best = loader, max(1, every_epochs), total_epochs, save_best
        self.ema = ema

    def model(self, trainer: Trainer) -> nn.Module:
        return self.ema.module if self.ema else trainer.model

    def evaluate(self, trainer: Trainer, model: nn.Module | None = None) -> dict[str, float]:
        logits, labels, _ = predict(model or self.model(trainer), self.loader, trainer.device, trainer.autocast)
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        return {**topk_accuracy(logits, labels), "loss": F.cross_entropy(logits, labels).item()}

    def record(self, trainer: Trainer, epoch: float) -> dict[str, Any]:
        entry = {"epoch": epoch, "step": trainer.progress.step, **self.evaluate(trainer)}
        trainer.extra_state.setdefault("history", []).append(entry)
        trainer.log_scalars(trainer.progress.step, {f"val/{k}": entry[k] for k in ("top1", "top5", "loss")})
        best = trainer.extra_state.get("best")
        if best is None or entry["top1"] > best["top1"]:
            trainer.extra_state["best"] = entry
            if self.save_best and trainer.dist.is_main:
                save_weights(self.model(trainer), trainer.output / "checkpoints" / "best")
        if trainer.dist.is_main:
            tqdm.write(f"epoch {epoch:g}: val top-1 {entry['top1']:.2f}%  top-5 {entry['top5']:.2f}%  "
                       f"loss {entry['loss']:.4f}")
        return entry

    def on_epoch_end(self, trainer: Trainer, epoch: int) -> None:
        if epoch % self.every == 0 or epoch == self.total:
            self.record(trainer, epoch)

    def on_end(self, trainer: Trainer) -> None:
        history = trainer.extra_state.get("history", [])
        if not history or history[-1]["step"] != trainer.progress.step:  # stopped mid-epoch (max_steps)
            self.record(trainer, trainer.summary()["epochs"])

    def results(self, trainer: Trainer) -> dict[str, Any]:
        history, best = trainer.extra_state["history"], trainer.extra_state["best"]
        final = history[-1]
        results = {"top1": final["top1"], "top5": final["top5"], "val_loss": final["loss"],
                   "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
                   "history": history}
        if self.ema:  # the trained weights themselves, for comparison
            raw = self.evaluate(trainer, trainer.model)
            results.update(top1_without_ema=raw["top1"], top5_without_ema=raw["top5"])
        return results


def eval_loader(source: Source, transform, batch_size: int, num_workers: int):
    return build_loader(build_dataset(source, transform, seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=num_workers > 0)


def labeled_data(cfg, in_chans: int, sources: LabeledSources | None) -> tuple[Source, Source, Source, str]:
    """(all training images, the labeled subset trained on, validation images, their description)."""
    cfg.check_labels()
    train_all, val, description = sources or labeled_splits(cfg.data, cfg.val_data, in_chans, cfg.seed)
    train = label_subset(train_all, fraction=cfg.labels_fraction, per_class=cfg.labels_per_class, seed=cfg.seed)
    return train_all, train, val, description


class FrozenEncoderData(NamedTuple):
    encoder: Any
    train_all: Source
    train: Source
    val: Source
    val_description: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    evaluation: EvalTransform


def frozen_encoder_data(cfg, sources: LabeledSources | None) -> FrozenEncoderData:
    """What kNN and the linear probe share: the encoder (random for `--checkpoint none`), the labeled
    splits, the number of classes and the evaluation transform."""
    from .embed import check_pool, load_encoder_or_random

    check_pool(cfg.pool)
    encoder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, img_size=cfg.img_size)
    config = encoder.config
    train_all, train, val, description = labeled_data(cfg, config.in_chans, sources)
    mean, std = default_normalization(config.in_chans, cfg.data)
    return FrozenEncoderData(encoder, train_all, train, val, description,
                             max(num_classes_of(train_all), num_classes_of(val)), mean, std,
                             EvalTransform(config.img_size, mean, std))


def label_summary(train_all: Source, train: Source, cfg) -> dict[str, Any]:
    return {"train_images": len(train), "train_images_available": len(train_all),
            "labels_fraction": cfg.labels_fraction, "labels_per_class": cfg.labels_per_class}


def model_source(checkpoint: str | None, config: ModelConfig, preset: str | None = None) -> dict[str, Any]:
    """Where a transfer run's model came from: the checkpoint as given, the file or checkpoint directory it
    resolved to (a run directory's latest checkpoint) and its detected format, or (`--checkpoint none`)
    the preset; and the architecture built."""
    from ..interop.formats import read_checkpoint

    if not checkpoint or checkpoint.lower() == "none":
        return {"checkpoint": "none", "preset": preset, "architecture": config.to_dict()}
    ckpt = read_checkpoint(checkpoint)  # a second read, but only the loaders know the format otherwise
    return {"checkpoint": checkpoint, "resolved": str(ckpt.path), "format": ckpt.format,
            "architecture": config.to_dict()}


def save_run_config(cfg: Any, output: Path, source: dict[str, Any], **resolved: Any) -> None:
    """RUN/config.yaml of a transfer run: the options, with `resolved` (defaults the data decided) filled
    in, and `model: null` when the model came from a checkpoint (the preset was not used). Where the model
    came from heads the file as a comment, so that `--config` and `--resume` still read it as options."""
    if source["checkpoint"] != "none":
        resolved["model"] = None
    save_config(dataclasses.replace(cfg, **resolved), output)
    if "format" in source:
        arch = ", ".join(f"{k}: {v}" for k, v in source["architecture"].items())
        header = (f"# model_source: {source['checkpoint']} ({source['format']} format, resolved to "
                  f"{source['resolved']})\n# architecture: {{{arch}}}\n")
        config_file = output / "config.yaml"
        write_text_atomic(config_file, header + config_file.read_text())


def describe_augmentation(aug: dict[str, Any], cfg: FinetuneConfig, in_chans: int, img_size) -> str:
    """One line: the augmentation a fine-tuning run uses, and why (the defaults follow the images)."""
    h, w = img_size
    parts = [f"crops of {aug['crop_min_scale']:g}-1 of the area", f"flip {cfg.hflip:g}",
             f"label smoothing {cfg.smoothing:g}", f"mixup {aug['mixup']:g}", f"cutmix {aug['cutmix']:g}",
             f"RandAugment {cfg.randaug_policy if aug['randaug'] else 'off'}", f"random erasing {aug['reprob']:g}"]
    return f"augmentation for {h}x{w} images with {in_chans} channel(s): {', '.join(parts)}"


def finetune(cfg: FinetuneConfig, sources: LabeledSources | None = None) -> dict[str, Any]:
    """Fine-tune as `cfg` says; returns the summary also written to RUN/metrics.json. `sources` replaces
    the data `cfg` names with ready (train, validation, description) sources."""
    from ..interop.classifier import load_encoder

    if not cfg.checkpoint:
        raise ConfigError("give --checkpoint PATH (a pre-trained model) or --checkpoint none (from scratch)")
    scratch = cfg.checkpoint.lower() == "none"
    if scratch:
        encoder, encoder_config = None, model_config(cfg.model, **cfg.model_overrides())
    else:
        encoder = load_encoder(cfg.checkpoint, **cfg.model_overrides())
        encoder_config = encoder.config
    in_chans = encoder_config.in_chans
    train_all, train, val, val_description = labeled_data(cfg, in_chans, sources)
    num_classes = max(num_classes_of(train_all), num_classes_of(val))
    names = class_names(train_all, num_classes)

    global_pool = "avg" if cfg.global_pool else "token"
    torch.manual_seed(cfg.seed)
    if scratch:
        model = ViTClassifier(encoder_config, num_classes, global_pool, cfg.drop_path)
    else:
        model = from_pretrained_encoder(encoder, num_classes, global_pool, cfg.drop_path)
    model.class_names = names

    aug = cfg.augmentation(in_chans, encoder_config.img_size)
    mean, std = default_normalization(in_chans, cfg.data)
    transform = FinetuneTransform(encoder_config.img_size, mean, std, scale=(aug["crop_min_scale"], 1.0),
                                  hflip=cfg.hflip, randaug=cfg.randaug_policy if aug["randaug"] else None,
                                  reprob=aug["reprob"])
    dataset = build_dataset(train, transform, cfg.seed)
    ema = ModelEma(cfg.model_ema_decay) if cfg.model_ema else None
    evaluator = ClassifierEvaluator(eval_loader(val, EvalTransform(encoder_config.img_size, mean, std),
                                                cfg.batch_size, cfg.num_workers),
                                    cfg.eval_every_epochs, cfg.epochs, ema=ema)
    objective = ClassificationObjective(num_classes, cfg.smoothing, aug["mixup"], aug["cutmix"], cfg.seed)
    trainer = Trainer(model, objective, dataset, cfg, groups=model.param_groups(cfg.weight_decay, cfg.layer_decay),
                      betas=(0.9, 0.999), hooks=[ema, evaluator] if ema else [evaluator])
    objective.rank = trainer.dist.rank
    output = Path(cfg.output)
    if trainer.dist.is_main:
        source = model_source(cfg.checkpoint, encoder_config, cfg.model)
        save_run_config(cfg, output, source, **aug)
        tqdm.write(describe_augmentation(aug, cfg, in_chans, encoder_config.img_size))
    summary = trainer.fit()
    if trainer.dist.is_main:
        best = output / "checkpoints" / "best"
        summary = {**summary, **evaluator.results(trainer),
                   "init": "scratch" if scratch else cfg.checkpoint,
                   **label_summary(train_all, train, cfg),
                   "val": val_description, "val_images": len(val), "num_classes": num_classes, "classes": names,
                   "global_pool": global_pool, "augmentation": aug, "layer_decay": cfg.layer_decay,
                   "drop_path": cfg.drop_path, "smoothing": cfg.smoothing,
                   "model_ema_decay": cfg.model_ema_decay if ema else None,
                   "best_checkpoint": str(best) if best.exists() else None,
                   "last_checkpoint": summary["checkpoint"], "model": encoder_config.to_dict(),
                   "model_source": source}
        write_json(output / "metrics.json", summary)
    return summary

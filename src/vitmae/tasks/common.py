"""What several tasks share: option groups, the runtime, the frozen encoder and its features, classifier
training and evaluation, segmentation and detection runs (their records, models and scores), kNN, and
weight saving. No task imports another task's module; what two of them need is here."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import (Batch, EvalTransform, PretrainTransform, build_dataset, build_device_dataset, build_loader,
                    build_source, default_normalization)
from ..data.augment import seeded_global_rngs
from ..data.coco import DetectionTransform, coco_metrics, collate_detection, to_coco_results
from ..data.labels import (Source, SubsetSource, label_subset, labeled_splits, num_classes_of, source_labels,
                           stratified_indices)
from ..data.scenes import FashionScenesSource
from ..data.segmentation import SegmentationTransform, collate_masks
from ..data.transforms import mix_seed
from ..errors import ConfigError
from ..interop.safe_load import CheckpointError
from ..interop.vitmae_format import load_vitmae, resolve_checkpoint
from ..model import POOLS, MaskedAutoencoder, ModelConfig, ViTEncoder, model_config
from ..model.classifier import pool_features
from ..model.detection import vitdet
from ..model.segmentation import Segmenter, sliding_window_logits
from ..options import save_config
from ..train import Trainer
from ..train.checkpoint import write_text_atomic
from ..train.hooks import PeriodicEvaluation
from ..train.runtime import Runtime
from ..train.segmentation_metrics import SegmentationMetrics
from .options import LabeledDataOptions


# -- the runtime and the frozen encoder ----------------------------------------------------------------
def load_encoder_or_random(checkpoint: str | None, model: str = "mae_vit_micro_patch4_28",
                           seed: int = 0, **overrides: Any) -> MaskedAutoencoder | nn.Module:
    """The model holding the encoder of `checkpoint` (any format load_pretrained reads, or a fine-tuned
    classifier), or, for "none", a randomly initialised MAE of the preset `model` (a baseline)."""
    from ..interop.classifier import load_encoder

    if not checkpoint:
        raise ConfigError("give --checkpoint PATH (a pre-trained or fine-tuned model), or --checkpoint none")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if checkpoint.lower() == "none":
        torch.manual_seed(seed)
        return MaskedAutoencoder(model_config(model, **overrides))
    return load_encoder(checkpoint, **overrides)


def normalization(config: ModelConfig, data: str | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation a model was trained with (recorded in its config), else the data's default."""
    if config.mean is not None and config.std is not None:
        return config.mean, config.std
    return default_normalization(config.in_chans, data)


def eval_transform(model: nn.Module, data: str | None) -> EvalTransform:
    config = model.config
    return EvalTransform(config.img_size, *normalization(config, data))


@dataclass
class Features:
    features: Tensor  # (N, D) float32 on the CPU
    labels: Tensor  # (N,) long, -1 where unknown
    indices: Tensor  # (N,) the source index of each row (unreadable images have no row)
    skipped: list[tuple[str, str]]  # (path, reason)


@torch.no_grad()
def encode_source(encoder: nn.Module, source: Source, transform, pool: str, runtime: Runtime,
                  batch_size: int = 256, num_workers: int = 0) -> Features:
    """Pooled features (`encoder.encode`) of every readable image of `source`, in source order."""
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling {pool!r}; choose from: {', '.join(POOLS)}")
    was_training = encoder.training
    encoder.eval().to(runtime.device)
    dataset = build_dataset(source, transform, seed=0)
    loader = build_loader(dataset, batch_size, None, num_workers, drop_last=False, persistent_workers=False)
    feats, labels, indices, skipped = [], [], [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            tokens = encoder.encode(batch.images.to(runtime.device))
        feats.append(pool_features(tokens, pool).float().cpu())
        labels.append(batch.targets)
        indices.append(batch.indices)
    encoder.train(was_training)
    if not feats:
        raise ConfigError("no readable image to encode")
    return Features(torch.cat(feats), torch.cat(labels), torch.cat(indices), skipped)


class FeatureDataset(torch.utils.data.Dataset):
    """Precomputed features as a dataset the engine trains on: sample i is (features[i], labels[i], i),
    so a Batch's `images` are (N, D) feature rows."""

    def __init__(self, features: Tensor, labels: Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.features[index], int(self.labels[index]), index


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


# -- pre-training data ---------------------------------------------------------------------------------
def pretrain_data(data: str, model_cfg: ModelConfig, crop_min_scale: float = 0.2, seed: int = 0,
                  on_device: bool = False):
    """(source, dataset, mean, std) of pre-training: the recipe's crops and flips, normalised. With
    `on_device` the workers only read files and draw crops; each batch is decoded, cropped and flipped
    where it goes (`EncodedBatch.to(device)`), with the same crops and flips."""
    source = build_source(data, "train", in_chans=model_cfg.in_chans)
    mean, std = normalization(model_cfg, data)
    transform = PretrainTransform(model_cfg.img_size, mean, std, scale=(crop_min_scale, 1.0))
    if on_device:
        return source, build_device_dataset(source, transform, model_cfg.in_chans, seed), mean, std
    return source, build_dataset(source, transform, seed), mean, std


# -- labeled data --------------------------------------------------------------------------------------
def labeled_data(cfg: LabeledDataOptions, in_chans: int, seed: int) -> tuple[Source, Source, Source, str]:
    """(all training images, the labeled subset trained on, validation images, their description)."""
    train_all, val, description = labeled_splits(cfg.data, cfg.val_data, in_chans, seed)
    train = label_subset(train_all, fraction=cfg.labels_fraction, per_class=cfg.labels_per_class, seed=seed)
    return train_all, train, val, description


def label_summary(train_all: Source, train: Source, cfg: LabeledDataOptions) -> dict[str, Any]:
    return {"train_images": len(train), "train_images_available": len(train_all),
            "labels_fraction": cfg.labels_fraction, "labels_per_class": cfg.labels_per_class}


class FrozenEncoderData(NamedTuple):
    encoder: nn.Module
    train_all: Source
    train: Source
    val: Source
    val_description: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    evaluation: EvalTransform


def frozen_encoder_data(cfg: Any) -> FrozenEncoderData:
    """What kNN and the linear probe share: the encoder (random for `--checkpoint none`), the labeled
    splits, the number of classes and the evaluation transform."""
    holder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides())
    encoder = holder.encoder
    config = encoder.config
    train_all, train, val, description = labeled_data(cfg, config.in_chans, cfg.seed)
    mean, std = normalization(config, cfg.data)
    return FrozenEncoderData(encoder, train_all, train, val, description,
                             max(num_classes_of(train_all), num_classes_of(val)), mean, std,
                             EvalTransform(config.img_size, mean, std))


def eval_loader(source: Source, transform, batch_size: int, num_workers: int):
    return build_loader(build_dataset(source, transform, seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=num_workers > 0)


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


# -- classification ------------------------------------------------------------------------------------
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
        images, labels = batch.images, batch.targets
        if self.mixup is None:
            return F.cross_entropy(model(images), labels, label_smoothing=self.smoothing)
        if len(images) % 2:  # timm's batch mixing pairs each sample with its mirror: needs an even count
            images, labels = images[:-1], labels[:-1]
        with seeded_global_rngs(mix_seed(self.seed, step, micro, self.rank)):
            images, targets = self.mixup(images, labels)
        return torch.sum(-targets * F.log_softmax(model(images).float(), dim=-1), dim=-1).mean()


@torch.no_grad()
def predict(model: nn.Module, loader, runtime: Runtime) -> tuple[Tensor, Tensor, list]:
    """(logits (N, K) float32, labels (N,), skipped) of every batch `loader` yields; the model's
    training mode is restored afterwards."""
    was_training = model.training
    model.eval()
    logits, labels, skipped = [], [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            out = model(batch.images.to(runtime.device, non_blocking=True))
        logits.append(out.float().cpu())
        labels.append(batch.targets)
    model.train(was_training)
    if not logits:
        raise ConfigError("no readable image to evaluate")
    return torch.cat(logits), torch.cat(labels), skipped


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percent of samples whose label is among the k highest logits (k capped at the class count)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[f"top{k}"] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


class ClassifierEvaluator(PeriodicEvaluation):
    """Top-1 / top-5 and loss on validation batches every `every_epochs` epochs and at the end, the best
    top-1's weights kept in RUN/checkpoints/best. `averaged` gives the weights to evaluate and keep instead
    of the trained ones (a moving average)."""

    best_key = "top1"

    def __init__(self, loader, every_epochs: int, total_epochs: int, save_best: bool = True,
                 averaged: Callable[[], nn.Module] | None = None):
        self.loader, self.every, self.total, self.save_best = loader, max(1, every_epochs), total_epochs, save_best
        self.averaged = averaged

    def model(self, trainer: Trainer) -> nn.Module:
        return self.averaged() if self.averaged else trainer.model

    def evaluate(self, trainer: Trainer, model: nn.Module | None = None) -> dict[str, float]:
        logits, labels, _ = predict(model or self.model(trainer), self.loader, trainer.runtime)
        keep = labels >= 0
        logits, labels = logits[keep], labels[keep]
        return {**topk_accuracy(logits, labels), "loss": F.cross_entropy(logits, labels).item()}

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {f"val/{k}": entry[k] for k in ("top1", "top5", "loss")}

    def line(self, entry: dict[str, Any]) -> str:
        return f"val top-1 {entry['top1']:.2f}%  top-5 {entry['top5']:.2f}%  loss {entry['loss']:.4f}"

    def results(self, trainer: Trainer) -> dict[str, Any]:
        history, best = trainer.extra_state["history"], trainer.extra_state["best"]
        final = history[-1]
        results = {"top1": final["top1"], "top5": final["top5"], "val_loss": final["loss"],
                   "best_top1": best["top1"], "best_top5": best["top5"], "best_epoch": best["epoch"],
                   "history": history}
        if self.averaged:  # the trained weights themselves, for comparison
            raw = self.evaluate(trainer, trainer.model)
            results.update(top1_without_ema=raw["top1"], top5_without_ema=raw["top5"])
        return results


# -- segmentation and detection runs -------------------------------------------------------------------
# What `vitmae segment` and `vitmae detect` write beside their checkpoints: all that rebuilds the model
# exactly (beyond the checkpoint's encoder config and normalisation) and finds the run's data again.
RUN_RECORDS = {"segment": "segmenter.json", "detect": "detector.json"}


def write_run_record(kind: str, output: Path, record: dict[str, Any]) -> None:
    write_text_atomic(output / RUN_RECORDS[kind], json.dumps(record, indent=2) + "\n")


def dense_run_record(checkpoint: str | Path) -> tuple[str, dict[str, Any]] | None:
    """(kind, record) of the segment or detect run that `checkpoint` (the run directory, one of its
    checkpoints or a weights file) belongs to; None for any other checkpoint."""
    path = resolve_checkpoint(checkpoint)
    if not path.exists():  # a hub id, say: no run of ours
        return None
    folder = path if path.is_dir() else path.parent
    for place in (folder, *list(folder.parents)[:2]):  # the checkpoint, RUN/checkpoints, RUN
        for kind, name in RUN_RECORDS.items():
            if (place / name).is_file():
                try:
                    return kind, json.loads((place / name).read_text())
                except ValueError as err:
                    raise CheckpointError(f"{place / name} is not valid JSON: {err}") from None
    return None


class DenseRun(NamedTuple):
    kind: str  # "segment" or "detect"
    model: nn.Module  # in eval mode, on the CPU
    info: dict[str, Any]  # the run's record
    checkpoint: Path  # where the weights came from

    @property
    def class_names(self) -> list[str]:
        """The run's class names; a folder without classes.txt: the class indices."""
        return self.info["classes"] or [str(c) for c in range(self.info["num_classes"])]

    @property
    def category_names(self) -> dict[int, str]:
        """A detection run's category ids, in the order of the model's labels, and their names."""
        return dict(zip(self.info["category_ids"], self.info["classes"]))


def load_dense_run(checkpoint: str | Path) -> DenseRun | None:
    """The trained model of a segment or detect run, rebuilt from its record and the checkpoint's encoder
    config (normalisation included); None for any other checkpoint."""
    found = dense_run_record(checkpoint)
    if found is None:
        return None
    kind, info = found
    weights, config = load_vitmae(checkpoint)
    encoder = ViTEncoder(config)
    if info.get("pos_embed") == "learned":  # interpolated, not recomputed, at other sizes
        encoder.learn_pos_embed()
    if kind == "segment":
        model = Segmenter(encoder, info["num_classes"], info["head"], info["out_indices"])
    else:
        model = vitdet(encoder, len(info["classes"]), info["masks"], tuple(info["img_size"]), info["window_size"],
                       info["global_blocks"], info["pyramid_channels"], info["proposals"],
                       info["detections_per_image"])
    model.load_state_dict(weights)
    return DenseRun(kind, model.eval(), info, resolve_checkpoint(checkpoint))


def segmentation_loader(source, crop: int, mean, std, batch_size: int, num_workers: int):
    """Evaluation batches of a segmentation source at the images' own sizes: fashion-scenes share theirs; a
    folder's differ, so one image per batch."""
    batch_size = batch_size if isinstance(source, FashionScenesSource) else 1
    return build_loader(build_dataset(source, SegmentationTransform(crop, mean, std, train=False)), batch_size,
                        None, num_workers, drop_last=False, persistent_workers=num_workers > 0,
                        collate_fn=collate_masks)


@torch.no_grad()
def segmentation_scores(model: nn.Module, loader, num_classes: int, ignore_index: int, crop: int, stride: int,
                        runtime, class_names: list[str] | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """(mIoU, mAcc, aAcc and per-class IoU / Acc of `model` on the batches of `loader`, images larger than
    `crop` predicted by sliding windows; the pairs that could not be read, path: reason). `runtime` has a
    `device` and `autocast()`: a Runtime, or the Trainer."""
    metrics, skipped = SegmentationMetrics(num_classes, ignore_index), {}
    was_training = model.training
    model.eval()
    for batch in loader:
        skipped.update(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            logits = sliding_window_logits(model, batch.images.to(runtime.device), num_classes, crop, stride)
        metrics.update(logits.argmax(1), batch.targets)
    model.train(was_training)
    return metrics.compute(class_names), skipped


def detection_loader(source, batch_size: int, num_workers: int):
    """Evaluation batches of a detection source: the images as they are (the detector resizes them)."""
    return build_loader(build_dataset(source, DetectionTransform(), seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=False, collate_fn=collate_detection)


@torch.no_grad()
def run_detector(model: nn.Module, loader, runtime, category_ids: list[int]) -> tuple[list[dict], list, list]:
    """(COCO results of every readable image, their image ids, (path, reason) of the skipped ones)."""
    was_training = model.training
    model.eval().to(runtime.device)
    results, image_ids, skipped = [], [], []
    for batch in loader:
        skipped.extend(batch.skipped)
        if len(batch) == 0:
            continue
        with runtime.autocast():
            outputs = model([image.to(runtime.device) for image in batch.images])
        for output, target in zip(outputs, batch.targets):
            results.extend(to_coco_results(output, target["image_id"], category_ids))
            image_ids.append(target["image_id"])
    model.train(was_training)
    return results, image_ids, skipped


def coco_scores(model: nn.Module, loader, source, ground_truth, masks: bool, runtime) -> tuple[dict[str, Any], list]:
    """({"box": COCO metrics, "mask": those of the masks (with `masks`)} of `model` on the images of
    `loader`, scored against `ground_truth`; (path, reason) of the images that could not be read)."""
    results, image_ids, skipped = run_detector(model, loader, runtime, source.category_ids)
    scores = {"box": coco_metrics(ground_truth, results, "bbox", image_ids, source.classes)}
    if masks:
        scores["mask"] = coco_metrics(ground_truth, results, "segm", image_ids, source.classes)
    return scores, skipped


# -- kNN -----------------------------------------------------------------------------------------------
# Samples the monitor of a pre-training run uses: a stratified bank and query set, so one evaluation
# costs the forward passes of at most 12,000 images.
MONITOR_BANK, MONITOR_QUERIES = 10_000, 2_000


@torch.no_grad()
def knn_scores(train_features: Tensor, train_labels: Tensor, query_features: Tensor, num_classes: int,
               k: int = 20, temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """(Q, num_classes) class votes of each query: sum over its k nearest training features (cosine) of
    exp(similarity / temperature) for the neighbour's class."""
    if k < 1 or temperature <= 0:
        raise ConfigError(f"k must be at least 1 and temperature positive (got k={k}, temperature={temperature})")
    bank = F.normalize(train_features.float(), dim=1)
    k = min(k, len(bank))
    votes = []
    for start in range(0, len(query_features), chunk):
        queries = F.normalize(query_features[start:start + chunk].float(), dim=1)
        similarity, neighbours = (queries @ bank.T).topk(k, dim=1)
        weights = (similarity / temperature).exp()
        scores = torch.zeros(len(queries), num_classes)
        scores.scatter_add_(1, train_labels[neighbours], weights)
        votes.append(scores)
    return torch.cat(votes)


def knn_accuracy(train_features: Tensor, train_labels: Tensor, query_features: Tensor, query_labels: Tensor,
                 k: int = 20, temperature: float = 0.07, num_classes: int | None = None) -> dict[str, float]:
    num_classes = num_classes or int(max(train_labels.max(), query_labels.max())) + 1
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k, temperature)
    return topk_accuracy(scores, query_labels)


def _spread(source, count: int, seed: int):
    """A stratified sample of at most `count` labeled images of `source`."""
    labels = source_labels(source)
    labeled = int((labels >= 0).sum())
    if labeled <= count and labeled == len(labels):
        return source
    fraction = min(1.0, count / max(1, labeled))
    return SubsetSource(source, stratified_indices(labels, fraction=fraction, seed=seed))


class KnnMonitor(PeriodicEvaluation):
    """kNN top-1 / top-5 of the encoder being pre-trained, at the start, every `every_epochs` epochs (0:
    none between) and at the end: the representation getting better, while the loss alone says little.
    Bank and queries are fixed stratified samples (at most 10,000 and 2,000 images) of the labeled data's
    train and val splits."""

    at_start, main_only, timed, history_key = True, True, True, "knn"

    def __init__(self, spec: str, in_chans: int, img_size, mean, std, every_epochs: int, seed: int,
                 batch_size: int = 256, num_workers: int = 0, k: int = 20, temperature: float = 0.07):
        train, val, self.description = labeled_splits(spec, None, in_chans, seed)
        self.bank_source, self.query_source = _spread(train, MONITOR_BANK, seed), _spread(val, MONITOR_QUERIES, seed)
        self.num_classes = max(num_classes_of(train), num_classes_of(val))
        self.transform = EvalTransform(img_size, mean, std)
        self.every, self.batch_size, self.num_workers = every_epochs, batch_size, num_workers
        self.k, self.temperature = k, temperature
        self.results: dict[str, Any] = {}

    def evaluate(self, trainer) -> dict[str, float]:
        bank = encode_source(trainer.model, self.bank_source, self.transform, "cls", trainer.runtime,
                             self.batch_size, self.num_workers)
        queries = encode_source(trainer.model, self.query_source, self.transform, "cls", trainer.runtime,
                                self.batch_size, self.num_workers)
        labeled = queries.labels >= 0
        return knn_accuracy(bank.features, bank.labels, queries.features[labeled], queries.labels[labeled],
                            self.k, self.temperature, self.num_classes)

    def scalars(self, entry: dict[str, Any]) -> dict[str, float]:
        return {"knn/top1": entry["top1"], "knn/top5": entry["top5"]}

    def line(self, entry: dict[str, Any]) -> str:
        return f"kNN top-1 {entry['top1']:.2f}% (k={self.k}, {self.description})"

    def on_end(self, trainer) -> None:
        super().on_end(trainer)
        if not trainer.dist.is_main:
            return
        history = self.history(trainer)
        self.results = {"knn": self.description, "knn_bank_images": len(self.bank_source),
                        "knn_query_images": len(self.query_source), "knn_top1_start": history[0]["top1"],
                        "knn_top1_end": history[-1]["top1"], "knn_history": history}

"""`vitmae knn`: weighted k-nearest-neighbour accuracy of frozen encoder features (the DINO protocol).

Features are L2-normalised; each query's k most cosine-similar training images vote for their class with
weight exp(similarity / temperature); the class with the largest vote is the prediction (top-5: the five
largest). k = 20, temperature 0.07 by default. No training, so it is cheap enough to run during
pre-training too (`vitmae pretrain --eval-knn DATA`, see KnnMonitor).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError, KnnConfig
from ..data import EvalTransform
from ..data.labels import SubsetSource, labeled_splits, num_classes_of, source_labels, stratified_indices
from ..train import Hook, write_json
from .embed import Features, Runtime, encode_source
from .finetune import LabeledSources, frozen_encoder_data, label_summary, model_source, save_run_config

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
    from .evaluate import topk_accuracy

    num_classes = num_classes or int(max(train_labels.max(), query_labels.max())) + 1
    scores = knn_scores(train_features, train_labels, query_features, num_classes, k, temperature)
    return topk_accuracy(scores, query_labels)


def knn(cfg: KnnConfig, sources: LabeledSources | None = None,
        features: tuple[Features, Features] | None = None) -> dict[str, Any]:
    """kNN accuracy as `cfg` says; returns the summary also written to metrics.json. `sources` and
    `features` as for `linprobe`."""
    encoder, train_all, train, val, val_description, num_classes, _, _, transform = frozen_encoder_data(cfg, sources)
    runtime = Runtime(cfg.device, cfg.precision)
    start = time.perf_counter()
    bank, queries = features or (
        encode_source(encoder, train, transform, cfg.pool, runtime, cfg.batch_size, cfg.num_workers),
        encode_source(encoder, val, transform, cfg.pool, runtime, cfg.batch_size, cfg.num_workers))
    labeled = queries.labels >= 0
    accuracy = knn_accuracy(bank.features, bank.labels, queries.features[labeled], queries.labels[labeled],
                            cfg.k, cfg.temperature, num_classes)
    summary = {**accuracy, "k": cfg.k, "temperature": cfg.temperature, "pool": cfg.pool,
               "checkpoint": cfg.checkpoint, **label_summary(train_all, train, cfg), "val": val_description,
               "val_images": int(labeled.sum()), "feature_dim": int(bank.features.shape[1]),
               "num_classes": num_classes, "time_s": round(time.perf_counter() - start, 2),
               "skipped_files": [{"path": p, "reason": r} for p, r in bank.skipped + queries.skipped],
               "model": encoder.config.to_dict(), "model_source": model_source(cfg.checkpoint, encoder.config, cfg.model)}
    output = Path(cfg.output)
    save_run_config(cfg, output, summary["model_source"])
    write_json(output / "metrics.json", summary)
    return summary


def _spread(source, count: int, seed: int):
    """A stratified sample of at most `count` labeled images of `source`."""
    labels = source_labels(source)
    labeled = int((labels >= 0).sum())
    if labeled <= count and labeled == len(labels):
        return source
    fraction = min(1.0, count / max(1, labeled))
    return SubsetSource(source, stratified_indices(labels, fraction=fraction, seed=seed))


class KnnMonitor(Hook):
    """kNN top-1 / top-5 of the encoder being pre-trained, at the start, every `every_epochs` epochs and at
    the end: the representation getting better, while the loss alone says little. Bank and queries are
    fixed stratified samples (at most 10,000 and 2,000 images) of the labeled data's train and val splits."""

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
        runtime = Runtime(trainer.device, trainer.precision)
        bank = encode_source(trainer.model, self.bank_source, self.transform, "cls", runtime, self.batch_size,
                             self.num_workers)
        queries = encode_source(trainer.model, self.query_source, self.transform, "cls", runtime, self.batch_size,
                                self.num_workers)
        labeled = queries.labels >= 0
        return knn_accuracy(bank.features, bank.labels, queries.features[labeled], queries.labels[labeled],
                            self.k, self.temperature, self.num_classes)

    def record(self, trainer, epoch: float) -> None:
        if not trainer.dist.is_main:
            return
        start = time.perf_counter()
        entry = {"epoch": epoch, "step": trainer.progress.step, **self.evaluate(trainer),
                 "time_s": round(time.perf_counter() - start, 2)}
        trainer.extra_state.setdefault("knn", []).append(entry)
        trainer.log_scalars(trainer.progress.step, {"knn/top1": entry["top1"], "knn/top5": entry["top5"]})
        from tqdm import tqdm

        tqdm.write(f"epoch {epoch:g}: kNN top-1 {entry['top1']:.2f}% (k={self.k}, {self.description})")

    def on_start(self, trainer) -> None:
        if not trainer.extra_state.get("knn"):
            self.record(trainer, 0)

    def on_epoch_end(self, trainer, epoch: int) -> None:
        if self.every and epoch % self.every == 0:  # 0: only at the start and the end
            self.record(trainer, epoch)

    def on_end(self, trainer) -> None:
        if not trainer.dist.is_main:
            return
        history = trainer.extra_state.get("knn", [])
        if not history or history[-1]["step"] != trainer.progress.step:
            self.record(trainer, trainer.summary()["epochs"])
        history = trainer.extra_state["knn"]
        self.results = {"knn": self.description, "knn_bank_images": len(self.bank_source),
                        "knn_query_images": len(self.query_source), "knn_top1_start": history[0]["top1"],
                        "knn_top1_end": history[-1]["top1"], "knn_history": history}

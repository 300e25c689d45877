"""`vitmae knn`: weighted k-nearest-neighbour accuracy of frozen encoder features (the DINO protocol).

Features are L2-normalised; each query's k most cosine-similar training images vote for their class with
weight exp(similarity / temperature); the class with the largest vote is the prediction (top-5: the five
largest). k = 20, temperature 0.07 by default. No training, so it is cheap enough to run during
pre-training too (`vitmae pretrain --eval-knn DATA`, see families.mae.KnnMonitor); the scoring is
families.features'.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..families import classify
from ..families.encoder import load_encoder_or_random, model_source, save_run_config
from ..families.features import encode_source, knn_accuracy
from ..model import POOLS, ModelConfig
from ..options import opt
from ..train import write_json
from ..train.runtime import Runtime
from .options import (CHECKPOINT_HELP, POOL_HELP, ClipViewOptions, EncoderOptions, InferenceOptions, LabeledDataOptions,
                      Task, clip_view_options)

__all__ = ["KnnOptions", "knn"]


@dataclass
class KnnOptions(LabeledDataOptions, ClipViewOptions, EncoderOptions, InferenceOptions):
    """`vitmae knn`: weighted k-nearest-neighbour classification on frozen encoder features."""

    output: str = opt("runs/knn", "directory of the results (metrics.json)")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP)
    k: int = opt(20, "neighbours that vote", min=1)
    temperature: float = opt(0.07, "vote weight exp(cosine similarity / temperature)", above=0)
    pool: str = opt("cls", POOL_HELP, choices=POOLS)


def knn(cfg: KnnOptions) -> dict[str, Any]:
    """kNN accuracy as `cfg` says; returns the summary also written to metrics.json."""
    encoder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides()).encoder
    labeled, _, _, transform, _ = classify.frozen_encoder_data(encoder, cfg.data, cfg.val_data, cfg.seed,
                                                               cfg.labels_fraction, cfg.labels_per_class,
                                                               clip_view_options(cfg))
    train_all, train, val, val_description, num_classes = labeled
    runtime = Runtime(cfg.device, cfg.precision)
    start = time.perf_counter()
    bank = encode_source(encoder, train, transform, cfg.pool, runtime, cfg.batch_size, cfg.num_workers)
    queries = encode_source(encoder, val, transform, cfg.pool, runtime, cfg.batch_size, cfg.num_workers)
    known = queries.labels >= 0
    accuracy = knn_accuracy(bank.features, bank.labels, queries.features[known], queries.labels[known],
                            cfg.k, cfg.temperature, num_classes)
    summary = {**accuracy, "k": cfg.k, "temperature": cfg.temperature, "pool": cfg.pool,
               "checkpoint": cfg.checkpoint,
               **classify.label_summary(labeled, cfg.labels_fraction, cfg.labels_per_class), "val": val_description,
               "val_images": int(known.sum()), "feature_dim": int(bank.features.shape[1]),
               "num_classes": num_classes, "time_s": round(time.perf_counter() - start, 2),
               "skipped_files": [{"path": p, "reason": r} for p, r in bank.skipped + queries.skipped],
               "model": encoder.config.to_dict(),
               "model_source": model_source(cfg.checkpoint, encoder.config, cfg.model)}
    output = Path(cfg.output)
    save_run_config(cfg, output, summary["model_source"])
    write_json(output / "metrics.json", summary)
    return summary


def report(s: dict[str, Any], cfg: KnnOptions) -> list[str]:
    unit = "videos" if ModelConfig.from_dict(s["model"]).is_video else "images"
    return [f"kNN (k={s['k']}, T={s['temperature']}) top-1 {s['top1']:.2f}%  top-5 {s['top5']:.2f}% on "
            f"{s['val']} ({s['val_images']} {unit}), bank of {s['train_images']} labeled {unit}"]


TASK = Task("knn", "weighted kNN accuracy of a frozen encoder's features", KnnOptions, knn, report)

"""`vitmae embed`: deterministic features of every image, and the feature extraction other tasks share.

Features come from `encode`: no masking, patch tokens in their original order, after the final norm;
`pool` takes the cls token or the mean patch token. Images go through the evaluation transform (resize +
center crop to the model's size), so the same image always gives the same vector.

    RUN/embeddings.npy   float32 (N, D), row i the image of row i of embeddings.csv
    RUN/embeddings.csv   index,path,label (label -1 where unknown)
    RUN/metrics.json     counts, dimension, pooling, skipped files
"""
from __future__ import annotations

import contextlib
import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..config import ConfigError, EmbedConfig, model_config
from ..data import (EvalTransform, ImageFolderSource, Source, build_dataset, build_loader, build_source,
                    default_normalization)
from ..data.sources import ShardSource
from ..model import MaskedAutoencoder
from ..model.classifier import pool_features
from ..model.vit import ViTEncoder
from ..train import write_json
from ..train.distributed import DistInfo
from ..train.engine import autocast, resolve_device, resolve_precision

POOLS = ("cls", "mean")


@dataclass
class Features:
    features: Tensor  # (N, D) float32 on the CPU
    labels: Tensor  # (N,) long, -1 where unknown
    indices: Tensor  # (N,) the source index of each row (unreadable images have no row)
    skipped: list[tuple[str, str]]  # (path, reason)


class Runtime:
    """Device and autocast for tasks that only run the model forward."""

    def __init__(self, device: str | torch.device = "auto", precision: str = "auto"):
        self.device = device if isinstance(device, torch.device) else resolve_device(device, DistInfo())
        self.precision = resolve_precision(precision, self.device)

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.precision)


def load_encoder_or_random(checkpoint: str | None, model: str = "mae_vit_micro_patch4_28",
                           seed: int = 0, **overrides: Any) -> ViTEncoder:
    """The encoder of `checkpoint` (any format load_pretrained reads, or a fine-tuned classifier), or, for
    "none", a randomly initialised MAE of the preset `model` (a baseline)."""
    from ..interop.classifier import load_encoder

    if not checkpoint:
        raise ConfigError("give --checkpoint PATH (a pre-trained or fine-tuned model), or --checkpoint none")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if checkpoint.lower() == "none":
        torch.manual_seed(seed)
        return MaskedAutoencoder(model_config(model, **overrides))
    return load_encoder(checkpoint, **overrides)


def check_pool(pool: str) -> None:
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling {pool!r}; choose from: {', '.join(POOLS)}")


def eval_transform(encoder: ViTEncoder, data: str) -> EvalTransform:
    config = encoder.config
    mean, std = default_normalization(config.in_chans, data)
    return EvalTransform(config.img_size, mean, std)


@torch.no_grad()
def encode_source(encoder: ViTEncoder, source: Source, transform, pool: str, runtime: Runtime,
                  batch_size: int = 256, num_workers: int = 0) -> Features:
    """Pooled features of every readable image of `source`, in source order."""
    check_pool(pool)
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
        labels.append(batch.labels)
        indices.append(batch.indices)
    encoder.train(was_training)
    if not feats:
        raise ConfigError("no readable image to encode")
    return Features(torch.cat(feats), torch.cat(labels), torch.cat(indices), skipped)


def embed_source(cfg: EmbedConfig, in_chans: int) -> Source:
    """Every image a spec names: a folder (recursively, unlabeled), a CSV, or a built-in data set's split."""
    if not cfg.data:
        raise ConfigError("give --data: a folder of images, a .csv of path[,label], or fashion-mnist")
    if os.path.isdir(cfg.data):
        return ImageFolderSource(cfg.data, labeled=False, in_chans=in_chans)
    source = build_source(cfg.data, cfg.split, labeled=True, in_chans=in_chans)
    if isinstance(source, ShardSource):
        raise ConfigError("embed reads folders, CSV files and fashion-mnist, not streamed shards")
    return source


EMBED_FORMATS = ("npy", "parquet")


def write_npy_csv(output: Path, features: np.ndarray, paths: list[str], labels: list[int]) -> list[Path]:
    """embeddings.npy (N, D) float32, and embeddings.csv with each row's index, path and label."""
    np.save(output / "embeddings.npy", features)
    with open(output / "embeddings.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "path", "label"])
        writer.writerows(zip(range(len(paths)), paths, labels))
    return [output / "embeddings.npy", output / "embeddings.csv"]


def write_parquet(output: Path, features: np.ndarray, paths: list[str], labels: list[int]) -> list[Path]:
    """embeddings.parquet: one row per image, columns path, label and embedding (fixed-size float32 list)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    embedding = pa.FixedSizeListArray.from_arrays(pa.array(features.reshape(-1)), features.shape[1])
    table = pa.table({"path": pa.array(paths, pa.string()), "label": pa.array(labels, pa.int64()),
                      "embedding": embedding})
    pq.write_table(table, output / "embeddings.parquet")
    return [output / "embeddings.parquet"]


def embed(cfg: EmbedConfig) -> dict[str, Any]:
    check_pool(cfg.pool)
    if cfg.format not in EMBED_FORMATS:
        raise ConfigError(f"unknown --format {cfg.format!r}; choose from: {', '.join(EMBED_FORMATS)}")
    if cfg.format == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'vitmae[parquet]'") from None
    encoder = load_encoder_or_random(cfg.checkpoint, img_size=cfg.img_size, num_heads=cfg.num_heads,
                                     norm_eps=cfg.norm_eps)
    source = embed_source(cfg, encoder.config.in_chans)
    runtime = Runtime(cfg.device, cfg.precision)
    start = time.perf_counter()
    result = encode_source(encoder, source, eval_transform(encoder, cfg.data), cfg.pool, runtime,
                           cfg.batch_size, cfg.num_workers)
    output = Path(cfg.output)
    output.mkdir(parents=True, exist_ok=True)
    write = write_parquet if cfg.format == "parquet" else write_npy_csv
    files = write(output, result.features.numpy().astype(np.float32),
                  [source.paths[i] for i in result.indices.tolist()], result.labels.tolist())
    summary = {
        "images": len(result.indices),
        "dim": int(result.features.shape[1]),
        "pool": cfg.pool,
        "checkpoint": cfg.checkpoint,
        "data": cfg.data,
        "format": cfg.format,
        "embeddings": str(files[0]),
        "index": str(files[-1]),  # where each row's path is: the csv, or the parquet file itself
        "time_s": round(time.perf_counter() - start, 2),
        "skipped_files": [{"path": p, "reason": r} for p, r in result.skipped],
    }
    write_json(output / "metrics.json", summary)
    return summary


class FeatureDataset(torch.utils.data.Dataset):
    """Precomputed features as a dataset the engine trains on: sample i is (features[i], i, labels[i]),
    so a Batch's `images` are (N, D) feature rows."""

    def __init__(self, features: Tensor, labels: Tensor):
        self.features, self.labels = features, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[Tensor, int, int]:
        return self.features[index], index, int(self.labels[index])


def frozen(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()

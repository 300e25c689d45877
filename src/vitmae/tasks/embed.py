"""`vitmae embed`: deterministic features of every image.

Features come from `encode`: no masking, patch tokens in their original order, after the final norm;
`pool` takes the cls token or the mean patch token. Images go through the evaluation transform (resize +
center crop to the model's size), so the same image always gives the same vector.

    RUN/embeddings.npy   float32 (N, D), row i the image of row i of embeddings.csv
    RUN/embeddings.csv   index,path,label (label -1 where unknown)
    RUN/metrics.json     counts, dimension, pooling, skipped files
"""
from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data import ImageFolderSource, ShardSource, Source, open_source
from ..errors import ConfigError
from ..model import POOLS
from ..options import opt
from ..train import write_json
from ..families.classify.data import clip_views
from ..families.encoder import eval_transform, load_encoder_or_random, normalization
from ..families.features import encode_source
from ..train.runtime import Runtime
from .options import (CHECKPOINT_HELP, POOL_HELP, ClipViewOptions, EncoderOptions, InferenceOptions, Task,
                      clip_view_options)

__all__ = ["EmbedOptions", "embed"]
EMBED_FORMATS = ("npy", "parquet")


@dataclass
class EmbedOptions(ClipViewOptions, EncoderOptions, InferenceOptions):
    """`vitmae embed`: deterministic features (no masking, original token order) of every image."""

    output: str = opt("runs/embed", "directory of the embeddings and metrics.json")
    checkpoint: str | None = opt(None, CHECKPOINT_HELP)
    data: str | None = opt(None, "a folder (every image in it, recursively), a .csv, or fashion-mnist")
    split: str = opt("train", "which split of the data (fashion-mnist: train | test; folders with train/ and "
                     "val/: train | val)")
    pool: str = opt("cls", POOL_HELP, choices=POOLS)
    format: str = opt("npy", "npy (embeddings.npy + embeddings.csv) | parquet (embeddings.parquet: path, label, "
                      "embedding)", choices=EMBED_FORMATS)


def embed_source(cfg: EmbedOptions, in_chans: int, clips: bool = False) -> Source:
    """Every image a spec names: a folder (recursively, unlabeled), a CSV, or a built-in data set's split;
    with `clips`, every video (a folder, a list, moving-fashion-mnist's split)."""
    if not cfg.data:
        raise ConfigError("give --data: a folder of images, a .csv of path[,label], or fashion-mnist")
    if clips:
        return open_source(cfg.data, cfg.split, "clip", in_chans=in_chans, clip_label=cfg.clip_label, clips=cfg.clips)
    if os.path.isdir(cfg.data):
        return ImageFolderSource(cfg.data, labeled=False, in_chans=in_chans)
    source = open_source(cfg.data, cfg.split, "image", in_chans=in_chans)  # with the labels it holds
    if isinstance(source, ShardSource):
        raise ConfigError("embed reads folders, CSV files and fashion-mnist, not streamed shards")
    return source


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


def embed(cfg: EmbedOptions) -> dict[str, Any]:
    if cfg.format == "parquet":
        try:
            import pyarrow.parquet  # noqa: F401
        except ImportError:
            raise ConfigError("--format parquet needs pyarrow: pip install 'vitmae[parquet]'") from None
    encoder = load_encoder_or_random(cfg.checkpoint, cfg.model, cfg.seed, **cfg.model_overrides()).encoder
    config = encoder.config
    source = embed_source(cfg, config.in_chans, config.is_video)
    if config.is_video:  # each video's views, their features averaged
        transform, _, _ = clip_views(config, *normalization(config, cfg.data), source, clip_view_options(cfg))
    else:
        transform = eval_transform(encoder, cfg.data)
    runtime = Runtime(cfg.device, cfg.precision)
    start = time.perf_counter()
    result = encode_source(encoder, source, transform, cfg.pool, runtime, cfg.batch_size, cfg.num_workers)
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


def report(s: dict[str, Any], cfg: EmbedOptions) -> list[str]:
    lines = [f"{s['images']} x {s['dim']} features ({s['pool']}) in {s['embeddings']}, paths in {s['index']}"]
    if s["skipped_files"]:
        lines.append(f"skipped {len(s['skipped_files'])} unreadable file(s): listed in metrics.json")
    return lines


TASK = Task("embed", "features of every image (npy) with their paths (csv)", EmbedOptions, embed, report)

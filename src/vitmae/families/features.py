"""Frozen-encoder features and what is scored on them, shared by the families that read an encoder without
training it: a data set's pooled features (`encode_source`), features as a data set the engine trains on
(a linear probe's), and the weighted kNN vote (`vitmae knn`, the kNN monitor of pre-training)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import build_dataset, build_loader
from ..data.labels import Source
from ..errors import ConfigError
from ..model import POOLS, pool_features
from ..train.runtime import Runtime


@dataclass
class Features:
    features: Tensor  # (N, D) float32 on the CPU
    labels: Tensor  # (N,) long, -1 where unknown
    indices: Tensor  # (N,) the source index of each row (unreadable images have no row)
    skipped: list[tuple[str, str]]  # (path, reason)


@torch.no_grad()
def encode_source(encoder: nn.Module, source: Source, transform, pool: str, runtime: Runtime,
                  batch_size: int = 256, num_workers: int = 0) -> Features:
    """Pooled features (`encoder.encode`) of every readable image of `source`, in source order; of a clip
    transform's views (N, V, C, T, H, W), each video's views averaged."""
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling {pool!r}; choose from: {', '.join(POOLS)}")
    encoder.to(runtime.device)
    loader = build_loader(build_dataset(source, transform), batch_size, None, num_workers, drop_last=False, persistent_workers=False)
    feats, labels, indices, skipped = [], [], [], []

    def pooled(batch) -> Tensor:
        images = batch.images.to(runtime.device)
        views = images.shape[:2] if images.dim() == 6 else None  # a video's evaluation views: averaged
        tokens = encoder.encode(images.flatten(0, 1) if views else images)
        features = pool_features(tokens, pool, encoder.config.num_prefix_tokens).float()
        return features.unflatten(0, views).mean(1) if views else features

    for batch, features in runtime.forward_each(encoder, loader, pooled, skipped):
        feats.append(features.cpu())
        labels.append(batch.targets)
        indices.append(batch.indices)
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


def topk_accuracy(logits: Tensor, labels: Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """Percent of samples whose label is among the k highest logits (k capped at the class count)."""
    out = {}
    for k in ks:
        top = logits.topk(min(k, logits.shape[1]), dim=1).indices
        out[f"top{k}"] = 100.0 * (top == labels[:, None]).any(dim=1).float().mean().item()
    return out


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

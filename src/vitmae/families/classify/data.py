"""Labeled data of a classifier: the splits, the labels kept for training, and evaluation batches."""
from __future__ import annotations

from typing import Any, NamedTuple

from ...data import EvalTransform, build_dataset, build_loader
from ...data.labels import Source, label_subset, labeled_splits, num_classes_of
from ...model import ViTEncoder
from ..encoder import Stats, normalization


class LabeledData(NamedTuple):
    train_all: Source  # every training image
    train: Source  # the labeled subset trained on
    val: Source
    val_description: str
    num_classes: int


def labeled_data(data: str, val_data: str | None, in_chans: int, seed: int, labels_fraction: float | None = None,
                 labels_per_class: int | None = None) -> LabeledData:
    """The splits of `data` (`val_data`: other validation images) with a stratified, seeded subset of the
    training labels kept (a fraction, or a count per class)."""
    train_all, val, description = labeled_splits(data, val_data, in_chans, seed)
    train = label_subset(train_all, fraction=labels_fraction, per_class=labels_per_class, seed=seed)
    return LabeledData(train_all, train, val, description, max(num_classes_of(train_all), num_classes_of(val)))


def label_summary(labeled: LabeledData, labels_fraction: float | None,
                  labels_per_class: int | None) -> dict[str, Any]:
    return {"train_images": len(labeled.train), "train_images_available": len(labeled.train_all),
            "labels_fraction": labels_fraction, "labels_per_class": labels_per_class}


class FrozenEncoderData(NamedTuple):
    """What kNN and the linear probe share: the labeled data and how the frozen encoder sees it."""

    labeled: LabeledData
    mean: Stats
    std: Stats
    evaluation: EvalTransform


def frozen_encoder_data(encoder: ViTEncoder, data: str, val_data: str | None, seed: int,
                        labels_fraction: float | None, labels_per_class: int | None) -> FrozenEncoderData:
    config = encoder.config
    labeled = labeled_data(data, val_data, config.in_chans, seed, labels_fraction, labels_per_class)
    mean, std = normalization(config, data)
    return FrozenEncoderData(labeled, mean, std, EvalTransform(config.img_size, mean, std))


def eval_loader(source: Source, transform, batch_size: int, num_workers: int):
    return build_loader(build_dataset(source, transform, seed=0), batch_size, None, num_workers,
                        drop_last=False, persistent_workers=num_workers > 0)

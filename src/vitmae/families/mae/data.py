"""Pre-training data: the training images with the recipe's crops and flips, and the fixed held-out sample
the run is watched on."""
from __future__ import annotations

import torch
from torch import Tensor

from ...data import (EvalTransform, PretrainTransform, ShardSource, UnreadableImage, build_dataset,
                     build_device_dataset, open_source, sample_generator)
from ...data.labels import Source
from ...data.source import require_readable
from ...model import ModelConfig
from ..encoder import normalization


def pretrain_data(data: str, model_cfg: ModelConfig, crop_min_scale: float = 0.2, seed: int = 0,
                  on_device: bool = False):
    """(source, dataset, mean, std) of pre-training: the recipe's crops and flips, normalised. With
    `on_device` the workers only read files and draw crops; each batch is decoded, cropped and flipped
    where it goes (`EncodedBatch.to(device)`), with the same crops and flips."""
    source = open_source(data, "train", "image", in_chans=model_cfg.in_chans)
    mean, std = normalization(model_cfg, data)
    transform = PretrainTransform(model_cfg.img_size, mean, std, scale=(crop_min_scale, 1.0))
    if on_device:
        return source, build_device_dataset(source, transform, model_cfg.in_chans, seed), mean, std
    return source, build_dataset(source, transform, seed), mean, std


def heldout_source(data: str, val_data: str | None, train: Source, in_chans: int) -> tuple[Source, str]:
    """(the held-out images, their description): --val-data, Fashion-MNIST's test split, or else (said
    plainly) the training images themselves."""
    if val_data or data == "fashion-mnist":
        spec = val_data or data
        description = f"{spec} ({'test split' if spec == 'fashion-mnist' else 'held out'})"
        return open_source(spec, "val", "image", in_chans=in_chans), description
    return train, f"{data} (a fixed sample of TRAINING images: no --val-data given)"


def heldout_images(source: Source, count: int, transform: EvalTransform, seed: int) -> Tensor:
    """A fixed sample of `count` readable images: evenly spread over a source, the first of a stream."""
    images: list[Tensor] = []
    reasons: list[str] = []  # of the unreadable ones, which the training loop reports too
    if isinstance(source, ShardSource):
        for sample in source.with_transform(transform, seed):
            if isinstance(sample, tuple):  # not a Skipped marker
                images.append(sample[0])
            else:
                reasons.append(sample.reason)
            if len(images) == count:
                break
    else:
        n = len(source)
        for index in sorted({int(i * n / min(count, n)) for i in range(min(count, n))}):
            try:
                img, _ = source[index]
            except UnreadableImage as err:
                reasons.append(err.reason)
                continue
            images.append(transform(img, sample_generator(seed, 0, index)))
    require_readable(len(images), "the held-out sample", reasons)
    return torch.stack(images)

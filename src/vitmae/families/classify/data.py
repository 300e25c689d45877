"""Labeled data of a classifier: the splits, the labels kept for training, and evaluation batches."""
from __future__ import annotations

from typing import Any, NamedTuple

from ...data import EvalTransform, build_dataset, build_loader
from ...data.clips import ClipSampling, EvalClips, TrainClips, frame_interval
from ...data.labels import Source, label_subset, labeled_splits, num_classes_of
from ...model import ModelConfig, ViTEncoder
from ..encoder import Stats, normalization


class LabeledData(NamedTuple):
    train_all: Source  # every training image
    train: Source  # the labeled subset trained on
    val: Source
    val_description: str
    num_classes: int


def labeled_data(data: str, val_data: str | None, in_chans: int, seed: int, labels_fraction: float | None = None,
                 labels_per_class: int | None = None, target: str = "class", **options: Any) -> LabeledData:
    """The splits of `data` (`val_data`: other validation images) with a stratified, seeded subset of the
    training labels kept (a fraction, or a count per class). `target` "clip": labeled videos (`options`:
    more open_source options, such as the built-in clips' label)."""
    train_all, val, description = labeled_splits(data, val_data, in_chans, seed, target, **options)
    train = label_subset(train_all, fraction=labels_fraction, per_class=labels_per_class, seed=seed)
    return LabeledData(train_all, train, val, description, max(num_classes_of(train_all), num_classes_of(val)))


def label_summary(labeled: LabeledData, labels_fraction: float | None,
                  labels_per_class: int | None) -> dict[str, Any]:
    return {"train_images": len(labeled.train), "train_images_available": len(labeled.train_all),
            "labels_fraction": labels_fraction, "labels_per_class": labels_per_class}


class FrozenEncoderData(NamedTuple):
    """What kNN and the linear probe share: the labeled data and how the frozen encoder sees it (a video
    encoder: its evaluation views, and the frame interval they take)."""

    labeled: LabeledData
    mean: Stats
    std: Stats
    evaluation: EvalTransform | EvalClips
    frame_interval: int | None = None


def frozen_encoder_data(encoder: ViTEncoder, data: str, val_data: str | None, seed: int,
                        labels_fraction: float | None, labels_per_class: int | None,
                        clips: dict[str, Any] | None = None) -> FrozenEncoderData:
    """`clips`: ClipViewOptions' fields, for a video encoder (labeled clips, seen through its views)."""
    config = encoder.config
    mean, std = normalization(config, data)
    if not config.is_video:
        labeled = labeled_data(data, val_data, config.in_chans, seed, labels_fraction, labels_per_class)
        return FrozenEncoderData(labeled, mean, std, EvalTransform(config.img_size, mean, std))
    labeled = labeled_data(data, val_data, config.in_chans, seed, labels_fraction, labels_per_class, "clip",
                           clip_label=clips["clip_label"], clips=clips["clips"])
    views, interval, _ = clip_views(config, mean, std, labeled.train_all, clips)
    return FrozenEncoderData(labeled, mean, std, views, interval)


def clip_views(config: ModelConfig, mean: Stats, std: Stats, source: Source,
               clips: dict[str, Any]) -> tuple[EvalClips, int, str | None]:
    """(the evaluation views ClipViewOptions' fields `clips` ask for, their frame interval: given, or sized
    from `source`'s videos, the line that says how it was sized)."""
    interval, line = frame_interval(source, config.num_frames, clips["frame_interval"])
    views = EvalClips(ClipSampling(config.num_frames, interval), config.img_size, mean, std, clips["test_clips"],
                      clips["test_crops"])
    return views, interval, line


def eval_loader(source: Source, transform, batch_size: int, num_workers: int):
    return build_loader(build_dataset(source, transform), batch_size, None, num_workers, drop_last=False,
                        persistent_workers=num_workers > 0)


def flip_changes_label(source: Source) -> bool:
    """Whether a mirror changes a sample's label (a direction of motion), through subsets."""
    while not hasattr(source, "flip_changes_label") and hasattr(source, "source"):
        source = source.source
    return bool(getattr(source, "flip_changes_label", False))


def clip_transforms(config: ModelConfig, mean: Stats, std: Stats, source: Source, clips: dict[str, Any],
                    crop_min_scale: float, hflip: float, repeat: int):
    """(training clips, evaluation views, the frame interval, the line on how it was sized) of a video
    classifier: VideoMAE's recipe of random resized crops and flips (pass `hflip` 0 where a mirror changes
    the label: `flip_changes_label`), `repeat` clips a video, sampled as the views `clip_views` makes."""
    views, interval, line = clip_views(config, mean, std, source, clips)
    train = TrainClips(views.sampling, config.img_size, mean, std, scale=(crop_min_scale, 1.0), hflip=hflip,
                       repeat=repeat)
    return train, views, interval, line

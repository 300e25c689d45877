"""The video masked-autoencoder family: VideoMAE / MAE-ST pre-training on clips (N, C, T, H, W). The model
is the image family's `MaskedAutoencoder` with a video config (`num_frames`: tubelets, VideoMAE's shape;
docs/architecture.md, "Video: the same encoder on tubelets"), trained by the same objective, masked as the
config says (`mask_type` tube or random, `mask_ratio`). Fine-tuning and probing a video encoder are the
classify family's (its classifier and objective take clips).

What a run's loss compared the predictions with is part of the model's config (`pixel_target`,
`norm_pix_loss`, the normalisation un-done), so every checkpoint records it; `target_record` and
`target_line` say it for a run's summary and report.
"""
from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from ...model import MaskedAutoencoder, ModelConfig
from ...model.mae import target_normalization
from ...model.vit import param_groups
from ..masked import MAEObjective, build_mae, mae_shard_units
from ..spec import FamilySpec, register_family
from .data import heldout_clips, pretrain_clips

__all__ = ["FAMILY", "build_model", "heldout_clips", "objective", "pretrain_clips", "shard_units", "target_line",
           "target_record"]

shard_units = mae_shard_units


def build_model(config: ModelConfig, data: str, seed: int) -> MaskedAutoencoder:
    """A fresh video MAE of `config`, recording the input normalisation it trains with (`data`'s by
    default)."""
    if not config.is_video:
        raise ConfigError("the video family trains video models (a config with num_frames, e.g. the "
                          "videomae_* presets); this is an image model")
    return build_mae(config, data, seed)


def objective(config: ModelConfig, seed: int, rank: int = 0) -> MAEObjective:
    """The masked-tubelet objective of a video model: its config's masking and ratio, the mask of each
    micro-batch keyed by (seed, step, micro-batch, rank)."""
    return MAEObjective(config.mask_ratio, config.mask_type, config.patching.size, seed, rank)


def target_record(config: ModelConfig) -> dict[str, Any]:
    """What the loss of a model of `config` compares its predictions with, for a run's summary."""
    record: dict[str, Any] = {"pixel_target": config.pixel_target, "norm_pix_loss": config.norm_pix_loss,
                              "mask_type": config.mask_type, "mask_ratio": config.mask_ratio}
    if config.pixel_target == "videomae":
        mean, std = target_normalization(config)
        record["unnormalized_with"] = None if mean is None else {"mean": list(mean), "std": list(std)}
    return record


def target_line(config: ModelConfig) -> str:
    """One line of a report: the target a run used, in words."""
    t, p, c = config.tubelet_size, config.patch_size, config.in_chans
    masking = f"{config.mask_type} masking at {config.mask_ratio:g}"
    if config.pixel_target == "mae":
        kind = "normalised by its own mean and variance" if config.norm_pix_loss else "as pixels"
        return f"target: the image MAE's, each {t}x{p}x{p}x{c} tubelet {kind}; {masking}"
    mean, _ = target_normalization(config)
    undone = "un-normalised inputs" if mean is not None else "inputs as given"
    kind = "each channel normalised over the tubelet (unbiased std + 1e-6)" if config.norm_pix_loss else "pixels"
    return f"target: VideoMAE's, {undone}, {t}x{p}x{p} tubelets, {kind}; {masking}"


FAMILY = register_family(FamilySpec(
    "video", "video masked-autoencoder pre-training (VideoMAE, MAE-ST)", build_model=build_model,
    shard_units=shard_units, param_groups=lambda model, weight_decay, layer_decay: param_groups(model, weight_decay),
    objective=MAEObjective))

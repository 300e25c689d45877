"""The encoder a transfer family starts from, prepared once for all of them: loaded from a checkpoint of any
format (or a random one, the baseline), with the input normalisation it was trained with; a trainable copy
for a dense head; and where it came from, for the run's config.yaml and metrics.json."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data import EvalTransform, default_normalization
from ..errors import ConfigError
from ..model import MaskedAutoencoder, ModelConfig, ViTEncoder, model_config
from ..options import Options, save_config
from ..train.checkpoint import write_text_atomic

Stats = tuple[float, ...]


def load_encoder_or_random(checkpoint: str | None, model: str = "mae_vit_micro_patch4_28",
                           seed: int = 0, **overrides: Any) -> MaskedAutoencoder | nn.Module:
    """The model holding the encoder of `checkpoint` (any format load_pretrained reads, or a fine-tuned
    classifier), or, for "none", a randomly initialised MAE of the preset `model` (a baseline)."""
    from ..interop.loading import load_encoder

    if not checkpoint:
        raise ConfigError("give --checkpoint PATH (a pre-trained or fine-tuned model), or --checkpoint none")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if checkpoint.lower() == "none":
        torch.manual_seed(seed)
        return MaskedAutoencoder(model_config(model, **overrides))
    return load_encoder(checkpoint, **overrides)


def normalization(config: ModelConfig, data: str | None) -> tuple[Stats, Stats]:
    """The input normalisation a model was trained with (recorded in its config), else the data's default."""
    if config.mean is not None and config.std is not None:
        return config.mean, config.std
    return default_normalization(config.in_chans, data)


def eval_transform(model: nn.Module, data: str | None) -> EvalTransform:
    """Resize and centre-crop to the model's size, normalised as it was trained."""
    config = model.config
    return EvalTransform(config.img_size, *normalization(config, data))


def prepared_encoder(checkpoint: str | None, preset: str, seed: int, overrides: dict[str, Any],
                     data: str | None) -> ViTEncoder:
    """The encoder of `checkpoint` (or a random one of `preset` for "none"), its config recording the
    normalisation the run trains with, so that every checkpoint of the run says it."""
    encoder = load_encoder_or_random(checkpoint, preset, seed, **overrides).encoder
    mean, std = normalization(encoder.config, data)
    encoder.config = encoder.config.replace(mean=mean, std=std)
    return encoder


def trainable_copy(encoder: ViTEncoder, drop_path: float = 0.0, frozen: bool = False) -> ViTEncoder:
    """A copy of `encoder` with stochastic depth `drop_path` (growing with depth), its position table
    trained on if `encoder`'s was learned; `frozen`: no parameter trains."""
    copy = ViTEncoder(encoder.config, drop_path)
    if encoder.pos_embed_kind == "learned":  # a fine-tuned encoder's table trains on
        copy.learn_pos_embed()
    copy.load_state_dict(encoder.state_dict())
    return copy.requires_grad_(False) if frozen else copy


def rebuilt_encoder(config: ModelConfig, pos_embed: str) -> ViTEncoder:
    """The encoder of a run's checkpoint, before its weights: `pos_embed` "learned" interpolates the table
    at other sizes rather than recomputing it."""
    encoder = ViTEncoder(config)
    return encoder.learn_pos_embed() if pos_embed == "learned" else encoder


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


def save_run_config(options: Options, output: Path, source: dict[str, Any], **resolved: Any) -> None:
    """RUN/config.yaml of a transfer run: the options, with `resolved` (defaults the data decided) filled
    in, and `model: null` when the model came from a checkpoint (the preset was not used). Where the model
    came from heads the file as a comment, so that `--config` and `--resume` still read it as options."""
    if source["checkpoint"] != "none":
        resolved["model"] = None
    save_config(dataclasses.replace(options, **resolved), output)
    if "format" in source:
        arch = ", ".join(f"{k}: {v}" for k, v in source["architecture"].items())
        header = (f"# model_source: {source['checkpoint']} ({source['format']} format, resolved to "
                  f"{source['resolved']})\n# architecture: {{{arch}}}\n")
        config_file = output / "config.yaml"
        write_text_atomic(config_file, header + config_file.read_text())

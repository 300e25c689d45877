"""Configuration dataclasses and the preset registry: the one source of truth for options.

CLI flags, YAML config files and the JSON stored beside a checkpoint are all views of these classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """An option a user set that cannot work; the CLI prints it as one line and exits with code 2."""


def to_2tuple(value: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    h, w = value
    return (int(h), int(w))


@dataclass
class ModelConfig:
    """Architecture of a masked autoencoder (encoder + decoder). Names follow the official MAE code."""

    img_size: tuple[int, int] = (224, 224)
    patch_size: int = 16
    in_chans: int = 3
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    decoder_embed_dim: int = 512
    decoder_depth: int = 8
    decoder_num_heads: int = 16
    decoder_mlp_ratio: float = 4.0
    qkv_bias: bool = True
    norm_eps: float = 1e-6
    norm_pix_loss: bool = True
    mask_ratio: float = 0.75

    def __post_init__(self) -> None:
        self.img_size = to_2tuple(self.img_size)
        h, w = self.img_size
        p = self.patch_size
        if h % p or w % p:
            raise ConfigError(f"img_size {h}x{w} is not divisible by patch_size {p}")
        if self.embed_dim % self.num_heads:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.decoder_embed_dim % self.decoder_num_heads:
            raise ConfigError(
                f"decoder_embed_dim {self.decoder_embed_dim} is not divisible by "
                f"decoder_num_heads {self.decoder_num_heads}"
            )
        if self.embed_dim % 4 or self.decoder_embed_dim % 4:
            raise ConfigError("embed_dim and decoder_embed_dim must be multiples of 4 (2-D sin-cos tables)")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ConfigError(f"mask_ratio must be in [0, 1), got {self.mask_ratio}")

    @property
    def grid_size(self) -> tuple[int, int]:
        return (self.img_size[0] // self.patch_size, self.img_size[1] // self.patch_size)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["img_size"] = list(self.img_size)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys: {', '.join(unknown)}")
        return cls(**d)

    def replace(self, **overrides: Any) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise ConfigError(f"unknown model option(s): {', '.join(unknown)}")
        return dataclasses.replace(self, **overrides)


# Encoder shapes from the ViT paper; the official MAE decoder (512 wide, 8 deep, 16 heads) for every preset.
PRESETS: dict[str, ModelConfig] = {
    "mae_vit_tiny_patch16": ModelConfig(embed_dim=192, depth=12, num_heads=3),
    "mae_vit_small_patch16": ModelConfig(embed_dim=384, depth=12, num_heads=6),
    "mae_vit_base_patch16": ModelConfig(embed_dim=768, depth=12, num_heads=12),
    "mae_vit_large_patch16": ModelConfig(embed_dim=1024, depth=24, num_heads=16),
    "mae_vit_huge_patch14": ModelConfig(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    # Sized for 28x28 grayscale Fashion-MNIST on a laptop CPU: 7x7 patches of 4 px, a narrow decoder.
    "mae_vit_micro_patch4_28": ModelConfig(
        img_size=(28, 28), patch_size=4, in_chans=1, embed_dim=192, depth=6, num_heads=3,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4,
    ),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with `overrides` applied (unknown names and options raise ValueError)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides)


# -- training ------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Options of the one training engine, shared by pre-training, fine-tuning and linear probing."""

    output: str = "runs/pretrain"
    epochs: int = 2
    max_steps: int | None = None  # stop after this many optimizer steps (the schedule still spans `epochs`)
    batch_size: int = 256  # per process
    accum_steps: int = 1
    blr: float = 1.5e-4  # base learning rate: lr = blr * effective batch / 256
    lr: float | None = None  # absolute learning rate; overrides blr
    min_lr: float = 0.0
    weight_decay: float = 0.05
    warmup_epochs: float = 0.2
    clip_grad: float | None = None
    precision: str = "auto"  # auto: bf16 on GPUs that support it, else fp32
    device: str = "auto"
    num_workers: int = 2
    seed: int = 0
    log_every_steps: int = 20
    save_every_steps: int | None = None
    save_every_epochs: int | None = None
    keep_checkpoints: int = 2
    resume: str | None = None


@dataclass
class PretrainConfig(TrainConfig):
    """`vitmae pretrain`: the defaults run the built-in Fashion-MNIST on a laptop CPU in minutes."""

    data: str = "fashion-mnist"
    val_data: str | None = None  # default: the test split of a built-in data set, else none
    samples_per_epoch: int | None = None  # required for streamed shards, whose length is unknown
    model: str = "mae_vit_micro_patch4_28"
    masking: str = "random"
    crop_min_scale: float = 0.2
    heldout_samples: int = 1000
    viz_every_epochs: int = 1
    # Architecture overrides of the preset (None = keep the preset's value).
    img_size: tuple[int, int] | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    norm_eps: float | None = None
    norm_pix_loss: bool | None = None
    mask_ratio: float | None = None

    def model_config(self) -> ModelConfig:
        overrides = {f.name: getattr(self, f.name) for f in dataclasses.fields(ModelConfig)
                     if hasattr(self, f.name)}
        return model_config(self.model, **overrides)

"""The architecture of a masked autoencoder (encoder + decoder) and the preset registry."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from .grid import Grid, Patching, num_tokens

# What an encoder does with its position table at an input size other than the one it was built for:
# recompute the sin-cos table exactly, or interpolate the stored table bicubically (the official
# fine-tuning code's convention: align_corners=False, no antialiasing; timm and transformers
# interpolate too). A learned table is always interpolated: there is nothing to recompute.
POS_EMBED_RESIZE = ("recompute", "interpolate")


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
    pos_embed_resize: str = "recompute"
    # The per-channel input normalisation the weights were trained with; None: not recorded (checkpoints
    # of other tools), and a task then uses its data's default.
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        self.img_size = to_2tuple(self.img_size)
        h, w = self.img_size
        p = self.patch_size
        if p < 1 or h < p or w < p:
            raise ConfigError(f"img_size {h}x{w} and patch_size {p} give no patch")
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
        if self.pos_embed_resize not in POS_EMBED_RESIZE:
            raise ConfigError(f"pos_embed_resize must be one of {', '.join(POS_EMBED_RESIZE)}, "
                              f"not {self.pos_embed_resize!r}")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(float(v) for v in value)
                if len(value) != self.in_chans:
                    raise ConfigError(f"{name} has {len(value)} values for {self.in_chans} channel(s)")
                setattr(self, name, value)
        if self.std is not None and min(self.std) <= 0:
            raise ConfigError(f"std must be positive, got {self.std}")

    @property
    def patching(self) -> Patching:
        """How inputs are cut into tokens (the grid seam: see model/grid.py)."""
        return Patching(self.patch_size)

    @property
    def grid_size(self) -> Grid:
        """The token grid of an input of the size the model is built for."""
        return self.patching.grid(self.img_size)

    @property
    def num_patches(self) -> int:
        return num_tokens(self.grid_size)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for name in ("img_size", "mean", "std"):
            if d[name] is not None:
                d[name] = list(d[name])
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
    # Pixel targets: a 16-value grayscale patch normalised by its own statistics is mostly noise to a
    # model trained for minutes, so the paper's norm-pix target is opt-in here (--norm-pix-loss).
    "mae_vit_micro_patch4_28": ModelConfig(
        img_size=(28, 28), patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, norm_pix_loss=False,
    ),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with `overrides` applied (unknown names and options raise ConfigError)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides)

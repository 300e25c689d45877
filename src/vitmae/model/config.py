"""The architecture of a masked autoencoder (encoder + decoder), image or video, and the preset registry.

An image model takes (N, C, H, W). A video model (`num_frames` set) takes (N, C, T, H, W), PyTorch's and
the official VideoMAE code's layout; transformers' (B, T, C, H, W) is converted at the interop boundary
only. The fields after `num_frames` describe what VideoMAE and MAE-ST do differently from the image MAE;
an image model keeps their image values, and a video model's unset ones take VideoMAE's.
"""
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
# A video model's position table: VideoMAE's fixed 1-D sin-cos table over all tokens (not stored: it is
# recomputed for any grid), or MAE-ST's learned separable space + time tables.
POS_EMBED_TYPES = ("sincos", "separable")
# Which tokens a video model removes when it draws its own mask: one spatial mask repeated over every
# time slice (VideoMAE's tube) or any tokens (MAE-ST's random).
MASK_TYPES = ("tube", "random")
# What the decoder predicts: the image MAE's patch (normalised over all its values when norm_pix_loss), or
# VideoMAE's (un-normalised inputs, each tubelet normalised per channel with the unbiased std + 1e-6).
PIXEL_TARGETS = ("mae", "videomae")
# The fields only a video model sets, and the value each has for an image model (and in files written
# before video models: a config without them is an image model's).
IMAGE_VALUES: dict[str, Any] = {
    "num_frames": None, "tubelet_size": 2, "cls_token": True, "k_bias": True, "encoder_norm": True,
    "decoder_embed_bias": True, "pos_embed_type": "sincos", "mask_type": "random", "pixel_target": "mae",
    "decoder_norm_eps": None, "fc_norm_eps": None,
}
# VideoMAE's values of the fields a video config leaves unset (None).
VIDEO_DEFAULTS: dict[str, Any] = {"cls_token": False, "k_bias": False, "decoder_embed_bias": False,
                                  "mask_type": "tube"}


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
    # -- video: frames per clip (None: an image model) and frames per tubelet (tokens are t x p x p)
    num_frames: int | None = None
    tubelet_size: int = 2
    # VideoMAE's shape (None: VideoMAE's value for a video model, the image MAE's for an image model):
    cls_token: bool | None = None  # a cls token before the patch tokens (VideoMAE: none)
    k_bias: bool | None = None  # with qkv_bias, a key bias too (VideoMAE: query and value biases only)
    encoder_norm: bool = True  # a final LayerNorm after the blocks (transformers: not with use_mean_pooling)
    decoder_embed_bias: bool | None = None  # a bias in the encoder-to-decoder projection (VideoMAE: none)
    pos_embed_type: str = "sincos"  # one of POS_EMBED_TYPES
    mask_type: str | None = None  # one of MASK_TYPES: the masking the model draws itself (VideoMAE: tube)
    pixel_target: str = "mae"  # one of PIXEL_TARGETS
    decoder_norm_eps: float | None = None  # the decoder's final LayerNorm (None: norm_eps; transformers: 1e-5)
    fc_norm_eps: float | None = None  # a classifier's fc_norm (None: norm_eps; transformers: 1e-5)

    def __post_init__(self) -> None:
        self.img_size = to_2tuple(self.img_size)
        self._check_video_fields()
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
        if not self.is_video and (self.embed_dim % 4 or self.decoder_embed_dim % 4):
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

    def _check_video_fields(self) -> None:
        """Fill a video model's unset fields with VideoMAE's values and an image model's with the image
        MAE's; refuse video options on an image model and video sizes that give no tubelet."""
        if not self.is_video:
            set_for_video = [f"{k}={getattr(self, k)!r}" for k, v in IMAGE_VALUES.items()
                             if getattr(self, k) not in (None, v)]
            if set_for_video:
                raise ConfigError(f"{', '.join(set_for_video)}: video options, for a model with num_frames")
            for name in VIDEO_DEFAULTS:
                setattr(self, name, IMAGE_VALUES[name])
            return
        for name, value in VIDEO_DEFAULTS.items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        t = self.tubelet_size
        if t < 1 or self.num_frames < t or self.num_frames % t:
            raise ConfigError(f"num_frames {self.num_frames} is not a positive multiple of tubelet_size {t}")
        for name, choices in (("pos_embed_type", POS_EMBED_TYPES), ("mask_type", MASK_TYPES),
                              ("pixel_target", PIXEL_TARGETS)):
            if getattr(self, name) not in choices:
                raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {getattr(self, name)!r}")
        for name in ("decoder_norm_eps", "fc_norm_eps"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ConfigError(f"{name} must be positive, got {value}")

    @property
    def is_video(self) -> bool:
        return self.num_frames is not None

    @property
    def input_size(self) -> tuple[int, ...]:
        """(H, W) of an image, (T, H, W) of a clip."""
        return (self.num_frames, *self.img_size) if self.is_video else self.img_size

    @property
    def patching(self) -> Patching:
        """How inputs are cut into tokens (the grid seam: see model/grid.py): p x p patches, or t x p x p
        tubelets."""
        if self.is_video:
            return Patching((self.tubelet_size, self.patch_size, self.patch_size))
        return Patching(self.patch_size)

    @property
    def grid_size(self) -> Grid:
        """The token grid of an input of the size the model is built for."""
        return self.patching.grid(self.input_size)

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patch tokens: the cls token, if there is one."""
        return int(self.cls_token)

    @property
    def num_patches(self) -> int:
        return num_tokens(self.grid_size)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON values; an image model's leave out the video fields, so that its files read
        as they did before video models (in versions that refuse keys they do not know, too)."""
        d = dataclasses.asdict(self)
        if not self.is_video:
            d = {k: v for k, v in d.items() if k not in IMAGE_VALUES}
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


def _videomae(embed_dim: int, depth: int, num_heads: int, decoder: tuple[int, int, int], **fields: Any
              ) -> ModelConfig:
    """A VideoMAE preset: 16 frames of 224 px in 2 x 16 x 16 tubelets (8 x 14 x 14 = 1,568 tokens), tube
    masking at 0.9, the per-patch normalised target; `decoder` is (width, depth, heads)."""
    width, decoder_depth, heads = decoder
    values = dict(num_frames=16, tubelet_size=2, img_size=224, patch_size=16, embed_dim=embed_dim, depth=depth,
                  num_heads=num_heads, decoder_embed_dim=width, decoder_depth=decoder_depth,
                  decoder_num_heads=heads, mask_ratio=0.9, norm_pix_loss=True)
    return ModelConfig(**{**values, **fields})


# The VideoMAE encoders (ViT shapes) with the official VideoMAE decoders (S 192 wide, 3 heads, B 384 / 6,
# both 4 deep; L 512 / 8 and H 640 / 8, both 12 deep); tiny's decoder is half its width, as S's and B's.
PRESETS.update({
    "videomae_vit_tiny_patch16": _videomae(192, 12, 3, (96, 4, 3)),
    "videomae_vit_small_patch16": _videomae(384, 12, 6, (192, 4, 3)),
    "videomae_vit_base_patch16": _videomae(768, 12, 12, (384, 4, 6)),
    "videomae_vit_large_patch16": _videomae(1024, 24, 16, (512, 12, 8)),
    "videomae_vit_huge_patch16": _videomae(1280, 32, 16, (640, 12, 8)),
    # Sized for the built-in moving-fashion-mnist on a CPU: 16 grayscale frames of 32 px in 2 x 8 x 8
    # tubelets, 8 x 4 x 4 = 128 tokens (16 visible under tube masking at 0.9); pixel targets, as the image
    # micro preset's.
    "videomae_vit_micro_patch8_32": _videomae(128, 6, 4, (64, 2, 4), img_size=32, patch_size=8, in_chans=1,
                                              norm_pix_loss=False),
})


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with `overrides` applied (unknown names and options raise ConfigError)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides)

"""What the tasks' options share: the `Task` record of a subcommand, `redefault`, and the option groups
several tasks are made of (an encoder preset and its overrides, a whole MAE's, labeled data, the built-in
scenes, inference, what a checkpoint may not record), with their help strings."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..model import POS_EMBED_RESIZE, PRESETS, ModelConfig, model_config
from ..data.moving_fashion import LABELS as CLIP_LABELS
from ..model.config import MASK_TYPES
from ..options import Options, opt
from ..train.config import RuntimeOptions


@dataclass(frozen=True)
class Task:
    """A subcommand of `vitmae`: its options dataclass, what it runs, what it prints (see tasks/__init__)."""

    name: str  # the subcommand
    summary: str  # one line, for `vitmae --help`
    options: type[Options]  # the options dataclass
    run: Callable[[Any], dict[str, Any]]
    report: Callable[[dict[str, Any], Any], list[str]]  # the lines printed after a run: (summary, options)
    config_file: bool = True  # takes --config FILE.yaml


def redefault(owner: type, name: str, default: Any) -> Any:
    """The option `name` of `owner` with another default (its help, choices and range kept)."""
    original = next(f for f in dataclasses.fields(owner) if f.name == name)
    return dataclasses.field(default=default, metadata=original.metadata)


@dataclass
class EncoderOptions(Options):
    """A preset and overrides of its encoder (None keeps the preset's, or the checkpoint's, value)."""

    model: str = opt("mae_vit_micro_patch4_28", "architecture preset (see `vitmae models`); a checkpoint "
                     "brings its own", choices=lambda: list(PRESETS))
    img_size: tuple[int, int] | None = opt(None, "input size: 224 or 224,160 (height,width)", min=1)
    patch_size: int | None = opt(None, "side of the square patches, in pixels", min=1)
    in_chans: int | None = opt(None, "image channels: 1 grayscale, 3 RGB (others from .npy files)", min=1)
    embed_dim: int | None = opt(None, "encoder width (the size of each token)", min=4)
    depth: int | None = opt(None, "encoder blocks", min=1)
    num_heads: int | None = opt(None, "encoder attention heads (they divide the width)", min=1)
    mlp_ratio: float | None = opt(None, "hidden width of the blocks' MLP, as a multiple of the width", above=0)
    norm_eps: float | None = opt(None, "LayerNorm epsilon", above=0)
    pos_embed_resize: str | None = opt(None, "at another input size: recompute the sin-cos position table "
                                       "(default) or interpolate it bicubically (learned tables always are)",
                                       choices=POS_EMBED_RESIZE)
    mean: tuple[float, ...] | None = opt(None, "input normalisation mean per channel, e.g. 0.5,0.5,0.5 "
                                         "(default: the checkpoint's, else the data's)")
    std: tuple[float, ...] | None = opt(None, "input normalisation std per channel (default: as --mean)")
    num_frames: int | None = opt(None, "frames of a clip a video model takes (a videomae_* preset's 16)", min=1)
    tubelet_size: int | None = opt(None, "frames of a video model's tubelet (a videomae_* preset's 2)", min=1)

    def model_overrides(self) -> dict[str, Any]:
        """The architecture options that were set, by ModelConfig name."""
        names = {f.name for f in dataclasses.fields(ModelConfig)}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in names and getattr(self, f.name) is not None}

    def model_config(self) -> ModelConfig:
        return model_config(self.model, **self.model_overrides())


@dataclass
class MAEOptions(EncoderOptions):
    """A preset and overrides of its whole masked autoencoder."""

    decoder_embed_dim: int | None = opt(None, "decoder width", min=4)
    decoder_depth: int | None = opt(None, "decoder blocks", min=1)
    decoder_num_heads: int | None = opt(None, "decoder attention heads (they divide its width)", min=1)
    norm_pix_loss: bool | None = opt(None, "predict per-patch normalised pixels (the paper's target)")
    mask_ratio: float | None = opt(None, "share of the patches removed (the paper's 0.75; VideoMAE's 0.9)", min=0,
                                   below=1)
    mask_type: str | None = opt(None, "a video model's masking: tube (one spatial mask for every time slice, "
                                "VideoMAE's default) | random (over space and time, MAE-ST's)", choices=MASK_TYPES)


@dataclass
class ClipSamplingOptions(Options):
    """How clips are taken from videos (video models)."""

    frame_interval: int | None = opt(None, "frames between a clip's frames, the sampling rate (default: sized "
                                     "from the videos' length: at most VideoMAE's 4, so that a clip fits)", min=1)
    clips: int | None = opt(None, "moving-fashion-mnist: training clips, validation a fifth as many (default "
                            "10000)", min=1)


@dataclass
class ClipTrainingOptions(ClipSamplingOptions):
    """How training clips are drawn (video models)."""

    repeat_aug: int = opt(1, "clips drawn from each decoded video in training (MAE-ST's repeated sampling: the "
                          "decode is paid once)", min=1)


def clip_view_options(options: Options) -> dict[str, Any]:
    """ClipViewOptions' fields of `options`, as the families take them."""
    return {f.name: getattr(options, f.name) for f in dataclasses.fields(ClipViewOptions)}


@dataclass
class ClipViewOptions(ClipSamplingOptions):
    """Which labeled clips a video classifier is evaluated on, and how (video models)."""

    test_clips: int = opt(1, "evaluation: clips spread evenly over each video (VideoMAE's Kinetics: 5)", min=1)
    test_crops: int = opt(1, "evaluation: crops of each clip, 1 (the centre) or 3 (both ends and the centre; "
                          "VideoMAE's Kinetics); the logits of the clips x crops views are averaged", choices=(1, 3))
    clip_label: str = opt("direction", "what moving-fashion-mnist's clips are labeled with: direction (of the "
                          "motion, 8) | playback (forward or reversed) | class (of the item, 10)",
                          choices=tuple(CLIP_LABELS))


@dataclass
class LabeledDataOptions(Options):
    """Where labeled images come from, and which of the training labels are kept."""

    data: str = opt("fashion-mnist", "labeled images: fashion-mnist | a folder of class sub-folders | a .csv "
                    "of path,label")
    val_data: str | None = opt(None, "validation images (default: the data's val/test split, else a held-out 10%)")
    labels_fraction: float | None = opt(None, "keep a stratified, seeded fraction of the training labels "
                                        "(e.g. 0.01)", above=0, max=1)
    labels_per_class: int | None = opt(None, "keep this many training labels of each class (stratified, seeded)",
                                       min=1)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.labels_fraction is not None and self.labels_per_class is not None:
            raise ConfigError("give --labels-fraction or --labels-per-class, not both")


@dataclass
class SceneOptions(Options):
    """The built-in fashion-scenes (`--data fashion-scenes`)."""

    scene_size: int = opt(64, "side of the fashion-scenes images", min=16)
    scenes: int | None = opt(None, "fashion-scenes training scenes, validation a fifth as many (default 5000 and "
                             "1000)", min=1)
    val_scenes: int | None = opt(None, "fashion-scenes validation scenes (default: as --scenes says)", min=1)


@dataclass
class InferenceOptions(RuntimeOptions):
    """How a frozen encoder is run over a data set."""

    batch_size: int = opt(256, "images per forward pass", min=1)


@dataclass
class HeadOptions(Options):
    """What a checkpoint may not record (plain official and timm files of a non-standard shape)."""

    num_heads: int | None = opt(None, "encoder attention heads, for a file that does not record them", min=1)
    decoder_num_heads: int | None = opt(None, "decoder attention heads, for a file that does not record them",
                                        min=1)
    norm_eps: float | None = opt(None, "LayerNorm epsilon, for a file that does not record it", above=0)

    def head_overrides(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("num_heads", "decoder_num_heads", "norm_eps")
                if getattr(self, k) is not None}


CHECKPOINT_HELP = "a pre-trained checkpoint or run directory (any format `vitmae info` reads); none: random"
POOL_HELP = "features: cls (the cls token) | mean (the mean patch token)"

"""Configuration dataclasses and the preset registry: the one source of truth for options.

CLI flags, YAML config files and the JSON stored beside a checkpoint are all views of these classes.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """An option a user set that cannot work; the CLI prints it as one line and exits with code 2."""


def save_config(cfg: Any, output: Any) -> None:
    """The run's `config.yaml`: every option, as `--config` reads it back."""
    import yaml
    from pathlib import Path

    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}
    (output / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


AUGMENT_ON = ("auto", "workers", "device")


def check_augment_on(augment_on: str) -> None:
    if augment_on not in AUGMENT_ON:
        raise ConfigError(f"unknown --augment-on {augment_on!r}; choose from: {', '.join(AUGMENT_ON)}")


def resolve_augment_on(augment_on: str, device_type: str) -> str:
    """Where pre-training decodes, crops and flips: 'workers' (PIL in the DataLoader workers) or 'device'
    (the training device, data.device_augment); 'auto' is the device when it is a GPU."""
    check_augment_on(augment_on)
    if augment_on == "auto":
        return "device" if device_type == "cuda" else "workers"
    return augment_on


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
    # Pixel targets: a 16-value grayscale patch normalised by its own statistics is mostly noise to a
    # model trained for minutes, so the paper's norm-pix target is opt-in here (--norm-pix-loss).
    "mae_vit_micro_patch4_28": ModelConfig(
        img_size=(28, 28), patch_size=4, in_chans=1, embed_dim=128, depth=6, num_heads=4,
        decoder_embed_dim=128, decoder_depth=2, decoder_num_heads=4, norm_pix_loss=False,
    ),
}


def model_config(name: str, **overrides: Any) -> ModelConfig:
    """The preset `name` with `overrides` applied (unknown names and options raise ValueError)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown model {name!r}; choose from: {', '.join(PRESETS)}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return PRESETS[name].replace(**overrides)


# -- options shared by several commands -----------------------------------------------------------------
@dataclass
class EncoderOptions:
    """A preset and overrides of its encoder (None keeps the preset's value)."""

    model: str = "mae_vit_micro_patch4_28"
    img_size: tuple[int, int] | None = None
    patch_size: int | None = None
    in_chans: int | None = None
    embed_dim: int | None = None
    depth: int | None = None
    num_heads: int | None = None
    mlp_ratio: float | None = None
    norm_eps: float | None = None

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

    decoder_embed_dim: int | None = None
    decoder_depth: int | None = None
    decoder_num_heads: int | None = None
    norm_pix_loss: bool | None = None
    mask_ratio: float | None = None


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
    compile: bool | None = None  # torch.compile the model; default: on GPUs, not on CPUs
    compile_mode: str = "default"  # default | reduce-overhead (CUDA graphs) | max-autotune | ...
    fp8: bool = False  # the blocks' linear layers in float8 (torchao; H100-class GPUs)
    num_workers: int = 2
    seed: int = 0
    log_every_steps: int | None = None  # default: 20, or often enough for 50 points in a shorter run
    log_to: str = "tensorboard"  # comma-separated: tensorboard, wandb (offline unless WANDB_MODE is set), mlflow
    save_every_steps: int | None = None
    save_every_epochs: int | None = None
    keep_checkpoints: int = 2
    resume: str | None = None


@dataclass
class PretrainConfig(MAEOptions, TrainConfig):
    """`vitmae pretrain`: the defaults run the built-in Fashion-MNIST on a laptop CPU in minutes."""

    data: str = "fashion-mnist"
    val_data: str | None = None  # default: the test split of a built-in data set, else none
    samples_per_epoch: int | None = None  # required for streamed shards, whose length is unknown
    masking: str = "random"
    crop_min_scale: float = 0.2
    heldout_samples: int = 1000
    viz_every_epochs: int = 1
    eval_knn: str | None = None  # labeled data for a kNN accuracy of the encoder during training
    knn_every_epochs: int = 1
    augment_on: str = "auto"  # workers | device | auto: device when training on a GPU

    def __post_init__(self) -> None:
        check_augment_on(self.augment_on)


# -- transfer ------------------------------------------------------------------------------------------


@dataclass
class LabeledDataConfig:
    """Where labeled images come from, and which of the training labels are kept."""

    data: str = "fashion-mnist"
    val_data: str | None = None  # default: the data's val/test split, else a held-out 10%
    labels_fraction: float | None = None  # keep a stratified, seeded fraction of the training labels
    labels_per_class: int | None = None  # or this many of each class

    def check_labels(self) -> None:
        if self.labels_fraction is not None and self.labels_per_class is not None:
            raise ConfigError("give --labels-fraction or --labels-per-class, not both")
        if self.labels_fraction is not None and not 0.0 < self.labels_fraction <= 1.0:
            raise ConfigError(f"--labels-fraction must be in (0, 1], got {self.labels_fraction}")
        if self.labels_per_class is not None and self.labels_per_class < 1:
            raise ConfigError(f"--labels-per-class must be at least 1, got {self.labels_per_class}")


@dataclass
class FinetuneConfig(LabeledDataConfig, EncoderOptions, TrainConfig):
    """`vitmae finetune`: the official MAE fine-tuning recipe (AdamW, layer-wise lr decay, drop path,
    warmup + cosine, mixup / cutmix / label smoothing, RandAugment, random erasing).

    Augmentation options left at None take defaults that follow the images (see `augmentation`): the
    official ImageNet ones (mixup 0.8, cutmix 1.0, RandAugment, random erasing 0.25, crops from 8% of
    the image) for RGB images larger than 64 px on their shorter side; a light recipe (crops from 80%,
    flip, label smoothing; no mixup, cutmix, RandAugment or erasing) for small images (64 px or less,
    like 28-px Fashion-MNIST or 32-px CIFAR, even converted to RGB) and for images that are not RGB.
    The heavy recipe regularises a ViT-B for 100 epochs of ImageNet; on 28-px images it costs accuracy."""

    output: str = "runs/finetune"
    checkpoint: str | None = None  # a pre-trained checkpoint, or "none" to train from scratch
    epochs: int = 20
    batch_size: int = 128
    blr: float = 1e-3
    min_lr: float = 1e-6
    warmup_epochs: float = 2.0
    global_pool: bool = True  # average the patch tokens + fc_norm; --cls-token classifies from the cls token
    layer_decay: float = 0.75
    drop_path: float = 0.1
    mixup: float | None = None  # default 0.8 for RGB images over 64 px, else 0
    cutmix: float | None = None  # default 1.0 for RGB images over 64 px, else 0
    smoothing: float = 0.1
    randaug: bool | None = None  # default on for RGB images over 64 px
    randaug_policy: str = "rand-m9-mstd0.5-inc1"
    reprob: float | None = None  # random erasing; default 0.25 for RGB images over 64 px, else 0
    crop_min_scale: float | None = None  # default 0.08 for RGB images over 64 px (official), else 0.8
    hflip: float = 0.5
    model_ema: bool = False  # evaluate and keep an exponential moving average of the weights
    model_ema_decay: float = 0.9999  # its longest horizon; short runs average over fewer steps (warm-up)
    eval_every_epochs: int = 1

    def augmentation(self, in_chans: int, img_size: int | tuple[int, int]) -> dict[str, Any]:
        """The augmentation options with their image-dependent defaults filled in: the official recipe for
        RGB images over 64 px on their shorter side, the light one otherwise (see the class docstring)."""
        heavy = in_chans == 3 and min(to_2tuple(img_size)) > 64
        defaults = dict(mixup=0.8 if heavy else 0.0, cutmix=1.0 if heavy else 0.0, randaug=heavy,
                        reprob=0.25 if heavy else 0.0, crop_min_scale=0.08 if heavy else 0.8)
        return {k: default if getattr(self, k) is None else getattr(self, k) for k, default in defaults.items()}


@dataclass
class LinprobeConfig(LabeledDataConfig, TrainConfig):
    """`vitmae linprobe`: the official linear probe: frozen encoder, cls-token features,
    BatchNorm1d(affine=False) + Linear, LARS, lr = blr * batch / 256, no weight decay.

    LARS moves each weight matrix by about lr * 0.001 of its norm per step, so the official blr (0.1 for
    90 epochs of ImageNet at batch 16384) suits large labeled sets; a few thousand labels need more epochs
    and a larger blr (the label-efficiency experiment scales them)."""

    output: str = "runs/linprobe"
    checkpoint: str | None = None  # "none": a randomly initialised encoder (a baseline)
    epochs: int = 90
    batch_size: int = 512
    blr: float = 0.1
    weight_decay: float = 0.0
    warmup_epochs: float = 10.0
    model: str = "mae_vit_micro_patch4_28"  # the architecture with --checkpoint none
    img_size: tuple[int, int] | None = None
    pool: str = "cls"  # cls | mean
    cache_features: bool = True  # frozen encoder: features of the un-augmented images, computed once
    crop_min_scale: float = 0.08  # RandomResizedCrop + flip, without --cache-features
    eval_every_epochs: int = 1


@dataclass
class InferenceOptions:
    """How a frozen encoder is run over a data set."""

    batch_size: int = 256
    num_workers: int = 2
    device: str = "auto"
    precision: str = "auto"


@dataclass
class KnnConfig(LabeledDataConfig, InferenceOptions):
    """`vitmae knn`: weighted k-nearest-neighbour classification on frozen encoder features."""

    output: str = "runs/knn"
    checkpoint: str | None = None
    model: str = "mae_vit_micro_patch4_28"  # the architecture with --checkpoint none
    img_size: tuple[int, int] | None = None
    k: int = 20
    temperature: float = 0.07
    pool: str = "cls"  # cls | mean
    seed: int = 0


@dataclass
class EmbedConfig(InferenceOptions):
    """`vitmae embed`: deterministic features (no masking, original token order) of every image."""

    output: str = "runs/embed"
    checkpoint: str | None = None
    data: str | None = None  # a folder (every image in it, recursively), a .csv, or fashion-mnist
    split: str = "train"  # for fashion-mnist: train | test
    img_size: tuple[int, int] | None = None
    pool: str = "cls"  # cls | mean
    format: str = "npy"  # npy: embeddings.npy + embeddings.csv | parquet: embeddings.parquet (pyarrow)


@dataclass
class EvaluateConfig(InferenceOptions):
    """`vitmae evaluate`: accuracy, per-class precision / recall / F1 and a confusion matrix."""

    output: str = "runs/evaluate"
    checkpoint: str | None = None
    which: str = "best"  # of a fine-tuning run directory: best (its best validation top-1, as it reported) | last
    data: str = "fashion-mnist"
    split: str = "val"  # the val (fashion-mnist: test) split; "train" also works


@dataclass
class LabelEfficiencyConfig:
    """`vitmae label-efficiency`: pre-train once without labels, then fine-tune (MAE and scratch),
    linear-probe and kNN with a few label fractions; a Markdown report with the table and plots."""

    output: str = "runs/label-efficiency"
    scale: str = "cpu"  # tiny (tests) | cpu (a laptop, minutes) | full (the GPU recipe)
    fractions: str | None = None  # label fractions, e.g. "0.01,0.1,1" (default: the scale's)
    pretrained: str | None = None  # reuse this pre-trained checkpoint instead of pre-training
    device: str = "auto"
    precision: str = "auto"
    num_workers: int = 2
    seed: int = 0



@dataclass
class BenchConfig(MAEOptions):
    """`vitmae bench`: images/s, peak memory and MFU of the training step, against transformers."""

    model: str = "mae_vit_base_patch16"
    device: str = "auto"
    batch_size: int = 64
    precision: str = "auto"
    compare: str | None = None  # hf and/or hf-compiled: transformers' ViTMAEForPreTraining, same config, batch, noise
    steps: int = 10
    warmup: int = 3
    compile: bool | None = None  # as `vitmae pretrain`: default on GPUs, not on CPUs
    compile_mode: str = "default"
    fp8: bool = False  # vitmae's step with its blocks' linear layers in float8, as `vitmae pretrain --fp8`
    peak_tflops: float | None = None  # the device's peak, for MFU (known for the H100)
    json: str | None = None  # also write the report here
    data: str | None = None  # also time the input pipeline alone and data + step end to end
    num_workers: int = 4
    augment_on: str = "auto"  # the input pipeline's: workers | device | auto (device on a GPU)
    seed: int = 0

    def __post_init__(self) -> None:
        check_augment_on(self.augment_on)

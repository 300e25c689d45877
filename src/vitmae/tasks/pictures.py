"""`vitmae reconstruct`, `vitmae attention`, `vitmae report`: pictures of a model and of a run."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..model import STRATEGIES
from ..model.config import MASK_TYPES
from ..options import Options, opt
from ..viz import attention_file, load_for_viewing, reconstruct_clip_files, reconstruct_image_files, write_report
from ..viz.video import ANIMATIONS
from .options import HeadOptions, Task

VIEW_CHECKPOINT_HELP = "any checkpoint `vitmae info` reads, or a run directory"


@dataclass
class ReconstructOptions(HeadOptions):
    """`vitmae reconstruct`: masked images and their reconstructions, one row per image (a video model:
    videos, a frames grid and an animation)."""

    images: list[str] = opt([], "the image files to mask and reconstruct (a video model: video files or frame "
                            "folders)", positional=True, metavar="IMAGE")
    checkpoint: str | None = opt(None, VIEW_CHECKPOINT_HELP, required=True)
    out: str | None = opt(None, "PNG file to write (a video model: the frames grid; the animation goes beside it)",
                          required=True)
    mask_ratio: float | None = opt(None, "share of patches removed (default: the model's)", min=0, below=1)
    masking: str | None = opt(None, "which patches are removed: random | block | grid (images; default random) | "
                              "tube | random (video; default the model's)", choices=(*STRATEGIES, *MASK_TYPES))
    seed: int = opt(0, "seed of the masking", min=0)
    mask: str | None = opt(None, "your own mask for all images: a picture (white = removed) or a file of patch "
                           "indices; the mask ratio then follows it")
    frame_interval: int | None = opt(None, "a video model: frames between a clip's frames (default: sized from "
                                     "the videos, as training sizes it)", min=1)
    animation: str = opt("gif", "a video model: the animation written beside --out: gif | webp | none",
                         choices=ANIMATIONS)
    denorm: str = opt("true", "norm-pix models: de-normalise each removed patch with its true mean and std "
                      "(flatters the model), or with those of its visible neighbours (what the model alone "
                      "gives)", choices=("true", "visible"))


def reconstruct(cfg: ReconstructOptions) -> dict[str, Any]:
    model, mean, std = load_for_viewing(cfg.checkpoint, **cfg.head_overrides())
    name = Path(cfg.checkpoint).name
    if model.config.is_video:
        if cfg.mask:
            raise ConfigError("--mask draws a mask over an image's patches; a video model's is --masking tube|random")
        files = reconstruct_clip_files(model, mean, std, name, cfg.images, cfg.out, cfg.mask_ratio, cfg.masking,
                                       cfg.seed, cfg.denorm, cfg.frame_interval, cfg.animation)
        return {"out": " and ".join(map(str, files)), "files": [str(f) for f in files]}
    if cfg.masking not in (None, *STRATEGIES):
        raise ConfigError(f"--masking {cfg.masking}: an image model's is one of {', '.join(STRATEGIES)}")
    return {"out": str(reconstruct_image_files(model, mean, std, name, cfg.images, cfg.out, cfg.mask_ratio,
                                               cfg.masking or "random", cfg.seed, cfg.mask, cfg.denorm))}


@dataclass
class AttentionOptions(HeadOptions):
    """`vitmae attention`: the cls token's attention over the patches, per head, on the image."""

    image: str = opt(None, "the image file to look at", positional=True)
    checkpoint: str | None = opt(None, VIEW_CHECKPOINT_HELP, required=True)
    out: str | None = opt(None, "PNG file to write", required=True)
    layer: int = opt(-1, "encoder block, from 0 (-1: the last)")


def attention(cfg: AttentionOptions) -> dict[str, Any]:
    return {"out": str(attention_file(cfg.checkpoint, cfg.image, cfg.out, cfg.layer,
                                          **cfg.head_overrides()))}


@dataclass
class ReportOptions(Options):
    """`vitmae report`: a self-contained HTML page of a run."""

    run_dir: str = opt(None, "the run directory", positional=True)
    out: str | None = opt(None, "HTML file to write (default: RUN_DIR/report.html)")


def report_page(cfg: ReportOptions) -> dict[str, Any]:
    return {"out": str(write_report(cfg.run_dir, cfg.out))}


def wrote(summary: dict[str, Any], cfg: Options) -> list[str]:
    return [f"wrote {summary['out']}"]


TASKS = (
    Task("reconstruct", "picture of masked images and their reconstructions, one row per image",
         ReconstructOptions, reconstruct, wrote, config_file=False),
    Task("attention", "the cls token's attention over the patches, per head, on the image", AttentionOptions,
         attention, wrote, config_file=False),
    Task("report", "self-contained HTML page of a run: curves, reconstructions, config", ReportOptions,
         report_page, wrote, config_file=False),
)

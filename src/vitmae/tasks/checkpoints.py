"""`vitmae models`, `vitmae info`, `vitmae convert`: the presets, and checkpoints of any format."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..families import mae
from ..interop import FORMATS, convert, describe
from ..options import Options, opt
from .options import HeadOptions, Task


@dataclass
class ModelsOptions(Options):
    """`vitmae models`: the model presets."""


def models(cfg: ModelsOptions) -> dict[str, Any]:
    return mae.presets()


def models_report(presets: dict[str, Any], cfg: ModelsOptions) -> list[str]:
    return mae.preset_lines(presets)


@dataclass
class InfoOptions(HeadOptions):
    """`vitmae info`: what a checkpoint is."""

    checkpoint: str = opt(None, "a checkpoint file, directory or run directory of any format vitmae reads",
                          positional=True)


def info(cfg: InfoOptions) -> dict[str, Any]:
    return describe(cfg.checkpoint, **cfg.head_overrides())


@dataclass
class ConvertOptions(HeadOptions):
    """`vitmae convert`: load a checkpoint and write it in another format."""

    src: str = opt(None, "the checkpoint to read (any format `vitmae info` reads)", positional=True)
    dst: str = opt(None, "where to write it: a directory, or a file for timm / official / vitmae",
                   positional=True)
    to: str = opt(None, "the format to write: vitmae | hf (config.json + model.safetensors) | timm (encoder "
                  "safetensors) | official ({'model': state_dict} .pth)", choices=FORMATS, required=True)


def convert_checkpoint(cfg: ConvertOptions) -> dict[str, Any]:
    out = convert(cfg.src, cfg.dst, cfg.to, **cfg.head_overrides())
    return {"format": cfg.to, "path": str(out or cfg.dst)}


TASKS = (
    Task("models", "list the model presets", ModelsOptions, models, models_report, config_file=False),
    Task("info", "detected format, architecture and parameter counts of a checkpoint", InfoOptions, info,
         lambda summary, cfg: [json.dumps(summary, indent=2, default=str)], config_file=False),
    Task("convert", "convert a checkpoint between formats", ConvertOptions, convert_checkpoint,
         lambda s, cfg: [f"wrote {s['format']} checkpoint to {s['path']}"], config_file=False),
)

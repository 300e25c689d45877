"""The official MAE release's files: PyTorch pickles, read and written.

Reading takes any `.pth` / `.pt` / `.bin`: a plain state dict, or one under `model` (the official
training scripts: `checkpoint-N.pth`, `mae_pretrain_vit_base.pth`), `module` (VideoMAE's DeepSpeed runs)
or `state_dict` (timm). Official VideoMAE files are read the same way: pre-training ones name the model's
halves `encoder.*` / `decoder.*` (keymaps' `videomae_official` layout), fine-tuned ones use our names. An official
training checkpoint's `args` states a few ModelConfig values (OFFICIAL_ARGS). Our official exports add the
model's record under `vitmae`, which the official scripts ignore and we read back.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import Checkpoint, from_state_dict
from .safe_load import CheckpointError, load_torch_file, name_list
from .vitmae_format import atomic_write, export_file, model_record

# official training scripts save {'model': ...}, VideoMAE's DeepSpeed runs {'module': ...}; timm {'state_dict': ...}
WRAPPERS = ("model", "module", "state_dict")
OFFICIAL_RECORD = "vitmae"  # our official exports: {'model': ..., 'vitmae': vitmae_format.model_record(...)}
# ModelConfig field <- attribute of the `args` Namespace in an official training checkpoint.
OFFICIAL_ARGS: tuple[tuple[str, str], ...] = (
    ("img_size", "input_size"),
    ("norm_pix_loss", "norm_pix_loss"),
    ("mask_ratio", "mask_ratio"),
)


def read_torch_checkpoint(path: Path) -> Checkpoint:
    """A PyTorch pickle as a Checkpoint: its weights judged by their keys, and what it records."""
    obj = load_torch_file(path)
    ckpt = from_state_dict(path, state_dict_in(path, obj))
    if ckpt.format == "timm" and any(isinstance(obj.get(k), dict) for k in ("model", "module")):
        ckpt.format = ckpt.layout = "official"  # encoder-only official files, e.g. mae_pretrain_vit_base.pth
    args = obj.get("args")
    if ckpt.format == "official" and isinstance(args, argparse.Namespace):  # a training checkpoint-N.pth
        ckpt.stated = {ours: getattr(args, theirs) for ours, theirs in OFFICIAL_ARGS if hasattr(args, theirs)}
    if isinstance(obj.get(OFFICIAL_RECORD), dict):
        ckpt.take_record(obj[OFFICIAL_RECORD])
    return ckpt


def state_dict_in(path: Path, obj: Any) -> dict[str, Tensor]:
    """The state dict a loaded pickle holds, itself or under one of WRAPPERS."""
    if isinstance(obj, dict):
        inner = next((obj[k] for k in WRAPPERS if isinstance(obj.get(k), dict)), obj)
        if inner and all(isinstance(v, Tensor) for v in inner.values()):
            return inner
    seen = f"a dict with keys {name_list(list(obj))}" if isinstance(obj, dict) else f"a {type(obj).__name__}"
    raise CheckpointError(f"{path}: holds {seen}, not a state dict (nor one under {' or '.join(WRAPPERS)})")


def write_official(model: nn.Module, state: dict[str, Tensor], path: Path) -> Path:
    """`state` (official names) as `{'model': state, 'vitmae': record}`, as the official scripts save a
    model plus what rebuilds `model` exactly (vitmae_format.model_record)."""
    state = {k: v.detach().cpu() for k, v in state.items()}
    record = model_record(model)
    return atomic_write(export_file(path, (".pth", ".pt")),
                        lambda tmp: torch.save({"model": state, OFFICIAL_RECORD: record}, tmp))
